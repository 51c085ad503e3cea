"""What `python -m agents.run` makes of its command line: the run's config (fresh, from a saved `config=`, or a
resumed run's), its --help, and `early_answer`.

Nothing here loads torch or matplotlib until a `resume=` reads its checkpoint, so agents/run.py answers --help and
refuses a fresh run's bad command line (an unknown key, a wrong type, a value out of range) while it starts, before
its slow imports: in about 1 s, where the line came after ~5 s of loading them.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from agents.checkpoint_paths import CheckpointError, as_given
from agents.cli_args import answer_early, check_given_once, check_overrides, override_key, text_values_kept, unquoted
from agents.config import (
    ConfigError,
    absolute_env_paths,
    check_utf8_texts,
    flatten_config,
    group_options,
    load_config,
    validate,
)
from agents.config_file import from_yaml_file
from agents.config_messages import error_line
from agents.env_presets import preset_bases, preset_options
from agents.tune_overrides import override_value as override_spelling  # (also agents.evaluate's)

if TYPE_CHECKING:
    from agents.run_lock import RunLocks


def early_answer(argv: list[str]) -> int | None:
    """The exit code of a command line answered before the slow imports: --help (0), or a fresh run's line that
    `config_for` refuses (2, after its one `error:` line, exactly as `agents.run.main` prints it); None: go on
    (a valid line, or a `resume=`, whose checkpoint is read with torch)."""
    if any(a in ("-h", "--help") for a in argv):
        return help_answer(argv)
    if any(a.startswith("resume=") and a.lower() != "resume=null" for a in argv):
        return None
    return answer_early(config_for, argv, _checked)


# a new run's config that early_answer made, which main()'s config_for of the same line takes instead of making it
# again: a config= file is read once (a pipe, config=/dev/stdin, read empty the second time; an edit in between)
_checked: dict[tuple[str, ...], tuple] = {}


def help_answer(argv: list[str]) -> int:
    """--help: the keys and their values as this command line sets them (one config= at most, as without it)."""
    try:
        path_arg(argv, "config")
        given = [a for a in argv if "=" in a and not a.startswith("~")]  # a key twice: the run's own line
        check_given_once([override_key(a) for a in given], given)
        line = [a for a in argv if a not in ("-h", "--help")]
        resumed = path_arg(line, "resume") is not None  # the run's keys, from its checkpoint (they were the defaults)
        text = help_text(line, config_for(line)[0] if resumed else None)
    except (ConfigError, CheckpointError) as exc:  # (`--help memory.slot=3` was a ConfigError traceback; a resume=
        # that names no usable checkpoint is its CheckpointError line)
        print(error_line(exc), file=sys.stderr)
        return 2
    print(text)
    return 0


def config_for(overrides: list[str], locks: RunLocks | None = None):
    """The config of this invocation and, with `resume=`, the run folder and the checkpoint to continue from
    (fresh from overrides: None, None; resumed: the saved config). With `locks`, a resumed run folder is locked
    before its checkpoint is read (a run another process still writes is refused without that load)."""
    if tuple(overrides) in _checked:
        return _checked.pop(tuple(overrides))
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        raise ConfigError(f"unknown option {flags[0]}: agents.run takes key=value overrides (and --help to list "
                          "them)")
    resume, saved = path_arg(overrides, "resume"), path_arg(overrides, "config")
    given = [o for o in overrides if "=" in o and not o.startswith("~")]  # others: check_overrides' own lines
    check_given_once([override_key(o) for o in given], given)  # as agents.evaluate does
    if saved is not None:  # a new run from a saved config (another seed, a longer budget ...)
        if resume is not None:
            raise ConfigError("config= starts a new run from a saved config, resume= continues a run; use one")
        return with_absolute_paths(from_yaml_file(saved, [o for o in overrides if not o.startswith("config=")])), \
            None, None
    if resume is None:
        return with_absolute_paths(load_config(overrides)), None, None
    from agents.checkpoint import (  # here: they load torch, which a fresh run's command line is checked without
        RESUME_KEYS,
        CheckpointError,
        check_compatible,
        check_own_run,
        check_saved_config,
        checkpoint_file,
        load_checkpoint,
        resolved,
        run_dir_of,
        shell_arg,
    )
    from agents.run_lock import RUN_LOCK

    others = [o for o in overrides if not o.startswith("resume=")]
    changes = [o for o in others if o.split("=", 1)[0] in RESUME_KEYS]
    if len(changes) < len(others):
        raise ConfigError(f"resume= continues a run with the config saved in its checkpoint; drop the other overrides "
                          f"({next(o for o in others if o not in changes)}; only {', '.join(RESUME_KEYS)} may change)")
    checkpoint = resolved(os.path.expanduser(resume))  # ~ as config= and agents.evaluate's checkpoint= (a quoted
    # or sh/zsh resume=~/run was '<cwd>/~/run': no checkpoint)
    given = as_given(resume)  # its checkpoints/ may link to another disk
    run_dir = run_dir_of(given)  # the run folder also when resume= names its checkpoints/ folder
    # a run folder (no stray lock file elsewhere), one still before its first checkpoint too: a resume= of a run
    # starting or in its first episodes said it "stopped before its first one"
    if locks is not None and ((run_dir / "checkpoints").is_dir() or (run_dir / RUN_LOCK).is_file()):
        locks.hold(run_dir)
    body = load_checkpoint(checkpoint, purpose="resume")
    loose = checkpoint_file(given)  # named, or a folder's own last.pt (a folder without checkpoints/)
    # the folder's: it took the run's files in beside the user's own, and left the loose last.pt stale (a link
    # elsewhere to a run's checkpoints/last.pt is that run's)
    if loose.is_file() and "checkpoints" not in (loose.parent.name, checkpoint_file(checkpoint).parent.name):
        named = "" if loose == given else f" holds {loose.name} loose, outside a run's checkpoints/ folder"
        raise CheckpointError(f"resume={resume}{named}: a run continues in its own folder; point resume= at the run "
                              "folder (the one holding checkpoints/last.pt) or a checkpoint inside it (python -m "
                              f"agents.evaluate {shell_arg('checkpoint', loose)} evaluates this one)")
    changed = OmegaConf.create()
    # checked and read as a fresh run's (Hydra's grammar: 010 is 10): device=cpu,cuda was omegaconf's traceback,
    # train.progress=2 was taken as true
    for override in check_overrides(text_values_kept(changes), {g: group_options(g) for g in ("env", "agent")}):
        OmegaConf.update(changed, override.key_or_group, override.value())
    try:
        cfg = validate(OmegaConf.merge(OmegaConf.create(body["config"]), changed))
    except ConfigError:  # the saved part's fault (an edited checkpoint) is the file's line, not a command line's
        check_saved_config(body["config"], checkpoint, "resume")
        raise
    check_compatible(body["config"], OmegaConf.to_container(cfg, resolve=True), checkpoint, purpose="resume")
    check_own_run(body["config"], run_dir, checkpoint_file(checkpoint), "resume")  # a valid config, but another run's
    from agents.checkpoint_fields import check_env_files_there

    check_env_files_there(cfg.env.kwargs, checkpoint, evaluating=False)
    cfg.run_dir, cfg.resume = str(run_dir), str(checkpoint)
    return cfg, run_dir, checkpoint


def with_absolute_paths(cfg):
    """A new run's config with its env file options absolute (`absolute_env_paths`): resume=, config= and
    agents.evaluate read the saved config from other working folders."""
    for option, path in absolute_env_paths(cfg).items():
        cfg.env.kwargs[option] = path
    check_utf8_texts({f"env.kwargs.{k}": v for k, v in cfg.env.kwargs.items()})  # (agents.evaluate takes them)
    return cfg


def path_arg(overrides: list[str], key: str) -> str | None:
    """The value of resume= / config=: given once and not empty. (Hydra's key=value overrides may repeat, the
    last one wins; these two are read here, where a second value used to be dropped silently.)"""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    values = [unquoted(v) for v in given]  # resume='<run>' as Hydra reads runs_root='<folder>'
    if len(values) > 1:
        raise ConfigError(f"{key}= is given {len(values)} times ({', '.join(map(repr, values))}); give it once")
    if values and not values[0].strip():  # Path("") is the working folder: a checkpoint or file never named
        raise ConfigError(f"{key}= is empty; point it at a run folder" + (" (or its checkpoints/last.pt)"
                          if key == "resume" else "'s config.yaml or a sweep's best_config.yaml"))
    if key == "resume" and [v.lower() for v in given] == ["null"]:  # the schema's "no resume" (--help's spelling;
        # Hydra reads null in any case; 'null' quoted is a path)
        return None
    return values[0] if values else None


def help_text(overrides: list[str] | None = None, cfg=None) -> str:
    """`--help`: config groups and every key with its value for the given overrides (`env=`, `agent=`, keys, or
    `config=<saved config.yaml>` and keys), or `cfg` as given (a resumed run's): the values that run would use."""
    envs, agents = group_options("env"), group_options("agent")
    overrides = list(overrides or [])
    saved = path_arg(overrides, "config")
    if cfg is None:
        cfg = (load_config(overrides) if saved is None
               else from_yaml_file(saved, [o for o in overrides if not o.startswith("config=")]))
    lines = ["usage: python -m agents.run [env=<id>] [agent=<name>] [key=value ...] | resume=<run dir> | "
             "config=<saved config.yaml> [key=value ...]", "",
             f"config groups:\n  env:   {', '.join(envs)}\n  agent: {', '.join(agents)}", "",
             "env presets (the base env's settings, with these options):"]
    lines += [f"  {preset}: {base} with " + " ".join(f"env.kwargs.{k}={override_spelling(v)}"
                                                    for k, v in preset_options(preset).items())
              for preset, base in preset_bases().items()]
    lines += ["", "keys (defaults):"]
    flat = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    kwargs = flat.pop("env.kwargs", None) or {}  # the env's options, one key each, after env.id
    flat = {**{k: v for k, v in flat.items() if k == "env.id"}, **{f"env.kwargs.{k}": v for k, v in kwargs.items()},
            **flat}
    # each as a key=value override reads it back (best_overrides.txt's writer): a str() of its own printed
    # run_dir=´ or runs_root=a=b bare, which the command line refuses when copied
    chosen = {"env.id": "env", "agent.name": "agent"}  # picked by their groups: env.id=... is refused when copied
    lines += [f"  {chosen.get(k, k)}={override_spelling(v)}" for k, v in flat.items()]
    return "\n".join(lines)
