"""Override lists of sweeps and benchmark suites: merging `key=value` lists, the overrides of every trial, and
values written back as Hydra's override grammar reads them (best_overrides.txt, a suite's runs)."""

from __future__ import annotations

import re

from agents.cli_args import override_key
from agents.config import ConfigError
from agents.tune_space import SweepPlan, plain


def merge_overrides(*lists: list[str]) -> list[str]:
    """Concatenate override lists; a later `key=value` replaces an earlier one of the same key (in place)."""
    merged: dict[str, str] = {}
    for overrides in lists:
        for item in overrides:
            key = override_key(item)
            merged.pop(key, None)
            merged[key] = item
    return list(merged.values())


def resolve_overrides(plan: SweepPlan, run_overrides: list[str]) -> list[str]:
    """The run-config overrides of every trial: the sweep file's, its env_overrides for the chosen env (by id,
    else by family), then the command line's; a later value of a key replaces an earlier one."""
    from agents.config import compose

    def add_env_options(overrides: list[str]) -> list[str]:  # ++: set whether or not the env file has it
        return [f"++{o.lstrip('+')}" if o.lstrip("+").startswith("env.kwargs.") else o for o in overrides]

    check_no_run_folder(plan.overrides + [o for v in plan.env_overrides.values() for o in v] + run_overrides)
    env_id = compose(add_env_options(merge_overrides(plan.overrides, run_overrides))).env.id
    specific = plan.env_overrides.get(env_id, plan.env_overrides.get(env_id.split("-")[0], []))
    return add_env_options(merge_overrides(plan.overrides, specific, run_overrides))


def check_no_run_folder(overrides: list[str]) -> None:
    """`run_dir=` and a run's `resume=` name one run folder; every trial gets its own, so the trials ignored them,
    yet they reached best_overrides.txt, whose rerun then wrote there (and a second rerun was refused). `config=`
    (agents.run's saved config file) is not read by a sweep: it was "unknown config key 'config'", pointing at
    agents.run --help, which lists it."""
    for item in overrides:
        key = override_key(item)
        if key == "run_dir":
            raise ConfigError(f"{item}: a sweep gives each trial its own folder under "
                              "<runs_root>/sweeps/<sweep>/<time>/; drop run_dir= (runs_root= picks where)")
        if key == "config":
            raise ConfigError(f"{item}: a sweep does not start from a saved config file; give its settings as "
                              "key=value (env=, agent= and the keys that differ), or run that config alone with "
                              f"python -m agents.run {item}")
        if key == "resume":
            raise ConfigError(f"{item}: trials cannot continue a run folder; drop it (to continue an "
                              "interrupted sweep: python -m agents.tune resume=<sweep dir>, alone)")


def pin_swept_keys(plan: SweepPlan, run_overrides: list[str]) -> list[str]:
    """A command-line `key=value` for a swept key fixes it: drop the key from the space; returns the keys."""
    pinned = [override_key(o) for o in run_overrides if override_key(o) in plan.search_space]
    for key in pinned:
        del plan.search_space[key]
    if pinned and not plan.search_space:
        raise ConfigError(f"the command line fixes every swept key ({', '.join(pinned)}): the search space "
                          "is empty; drop one of them or use `python -m agents.run` for a single run")
    return pinned


_BARE = re.compile(r"[A-Za-z_][\w\-./]*", re.ASCII)  # Hydra reads no other letters unquoted (é, ², ...)


def override_value(value) -> str:
    """A value as Hydra's override grammar reads it back unchanged (bool, int, float, None, str, and lists of them:
    a list was its str() quoted, "'[1, 2]'", which an env option such as `distances` refused as text)."""
    value = plain(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    # fullmatch: a pattern ending in $ matched 'A\n' too (before its newline), written bare and refused by Hydra
    if _BARE.fullmatch(text) and text.lower() not in ("true", "false", "null", "nan", "inf"):
        return text
    # Hydra's quoted strings unescape backslashes only before a quote and at the end: double exactly those
    text = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    return "'" + re.sub(r"(\\+)\Z", lambda m: m[1] * 2, text) + "'"  # \Z: the very end ($: before a newline too)


def trial_overrides(run_overrides: list[str], params: dict) -> list[str]:
    """The `python -m agents.run` overrides that rebuild a trial's config."""
    # `++` adds or replaces: env options are not in the env's config file unless it sets them
    return merge_overrides(run_overrides, [f"{'++' if k.startswith('env.kwargs.') else ''}{k}="
                                           f"{override_value(v)}" for k, v in params.items()])
