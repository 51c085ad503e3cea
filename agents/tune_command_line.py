"""`python -m agents.tune`'s command line: its own keys (sweep=, num_samples=, resume=), `sweep.*` edits of the
sweep file and the run-config overrides of every trial."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agents.cli_args import check_given_once, override_key, shortened, unquoted, unusable_path
from agents.config import ConfigError, positive_int_setting, utf8
from agents.tune_space import SWEEP_PREFIX, SweepPlan


@dataclass
class CommandLine:
    sweep: str = "memory"
    num_samples: int | None = None
    resume: str | None = None
    sweep_overrides: list[str] = field(default_factory=list)
    run_overrides: list[str] = field(default_factory=list)


def parse_command_line(argv: list[str]) -> CommandLine:
    """Split `key=value` arguments into agents.tune's own keys, `sweep.*` edits and run-config overrides."""
    cli = CommandLine()
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not key=value; usage: python -m agents.tune env=<id> "
                              "[sweep=<name>] [num_samples=N] [key=value ...] | resume=<sweep dir>")
    check_given_once([override_key(arg) for arg in argv], argv)  # the last one won, silently (search_space too)
    for arg in argv:
        key, value = arg.split("=", 1)
        if key == "sweep":  # quoted as Hydra reads env='<id>' (sweep='smoke' was "unknown sweep \"'smoke'\"")
            cli.sweep = unquoted(value)
        elif key == "num_samples":
            cli.num_samples = positive_int_setting("num_samples", unquoted(value))
        elif key == "resume":
            if not value.strip():  # Path("") is the working folder, a sweep folder the user never named
                raise ConfigError("resume= is empty; point it at a sweep folder (runs/sweeps/<sweep>/<time>)")
            cli.resume = os.path.expanduser(unquoted(value))  # ~ as agents.run's (a quoted '~/x' named ./~)
            full = str(Path(cli.resume).absolute())
            if why := unusable_path(full) or (not utf8(full) and "it is not UTF-8 text"):  # Tune's look at it
                # was pyarrow's OSError (or UnicodeEncodeError) traceback
                raise ConfigError(f"resume={shortened(cli.resume)!r}: {why}; point it at a sweep folder")
        elif key.startswith(SWEEP_PREFIX):
            cli.sweep_overrides.append(arg)
        elif key.split(".")[0] in SweepPlan.__dataclass_fields__.keys() - {"name", "num_samples"}:  # was "unknown
            # config key 'max_failures'; run `python -m agents.run --help` ...": no run-config key has these names
            raise ConfigError(f"{arg}: {key.split('.')[0]} is a field of the sweep file; set it with sweep.{arg}")
        else:
            cli.run_overrides.append(arg)
    if cli.resume is not None and (cli.sweep_overrides or cli.run_overrides or cli.num_samples):
        extra = (cli.sweep_overrides + cli.run_overrides + [f"num_samples={cli.num_samples}"])[0]
        raise ConfigError(f"resume= continues a sweep with its own saved sweep.yaml; drop the other "
                          f"arguments ({extra})")
    return cli
