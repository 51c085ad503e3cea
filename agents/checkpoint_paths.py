"""Where a checkpoint is, without reading it: the run folder and the file a resume= / checkpoint= path names, and
the one-line error of a path that holds none.

Torch-free (agents.checkpoint reads the file), so `agents.evaluate` refuses a mistyped path while it starts,
before its slow imports.
"""

from __future__ import annotations

import errno
import os
import shlex
from pathlib import Path

from agents.config_messages import OneLineError


class CheckpointError(OneLineError):
    """A missing, damaged or incompatible checkpoint; the message is one line with the fix."""


# What a caller can do about a checkpoint it cannot use, by what it loads the checkpoint for (`purpose`):
# agents.run's resume= continues the run, agents.evaluate's checkpoint= re-evaluates it.
PURPOSES = ("resume", "evaluate")
KEY_OF = {"resume": "resume=", "evaluate": "checkpoint="}  # the argument that names the checkpoint


READ_AS_GIVEN = ("resume", "config", "checkpoint", "out")  # paths read outside Hydra's grammar (`unquoted`)


def shell_arg(key: str, value) -> str:
    """`key=value` as a shell word, for the commands a message tells the user to run: a run folder with a space
    (`runs/My Drive/...`) or a quote in it was printed bare, and pasted as two arguments. A key that Hydra parses
    (run_dir=) gets its value in Hydra's spelling too, where the bare text would not read back as it is: a folder
    `n(1)`, `n,2` or `n=3` was refused ("mismatched input '('"), or read as a sweep."""
    text = str(value) if key in READ_AS_GIVEN else hydra_spelling(str(value))
    word = f"{key}={text}"
    if shlex.quote(word) == word:
        return word
    return f'"{word}"' if not set(word) & set('"$`\\!') else shlex.quote(word)  # '...' of '...' reads badly


def hydra_spelling(text: str) -> str:
    """`text` as a Hydra override value that reads back as this text: bare where it does, else quoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (override,) = OverridesParser.create().parse_overrides([f"key={text}"])
        if not override.is_sweep_override() and override.value() == text:
            return text
    except (HydraException, ValueError):
        pass
    from agents.tune_overrides import override_value

    return override_value(text)


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r}: choose one of {PURPOSES}")
    return purpose


def _resolve_or_raise_on_loop(path: Path) -> Path:
    """path.resolve(), raising on a symlink loop in every Python: since 3.13 the default (non-strict) resolve returns a
    looping path as it is (the error became "no checkpoint at"), and only strict=True still raises (OSError, ELOOP)."""
    try:
        return path.resolve(strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise
        return path.resolve()  # a missing part (or a file used as a folder): the callers' checks name it


def resolved(path: str | Path) -> Path:
    """Path(path).resolve(), or one CheckpointError line where it cannot be (a symlink loop was a traceback)."""
    try:
        full = _resolve_or_raise_on_loop(Path(path))
    except (RuntimeError, OSError) as exc:  # a symlink loop: RuntimeError before Python 3.13, OSError (ELOOP) since
        raise CheckpointError(f"{str(path)!r} cannot be resolved ({exc}); name the run folder itself") from None
    from agents.cli_args import shortened, unusable_path

    if why := unusable_path(str(full)):  # each later look at it was an OSError traceback (File name too long)
        raise CheckpointError(f"{shortened(str(path))!r}: {why}; name the run folder itself")
    return full


def as_given(path: str | Path) -> Path:
    """`path` made absolute (~ expanded) as named, its links not followed: a checkpoints/ linked to another disk is
    still read as its run's (`run_dir_of`)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def run_dir_of(path: str | Path) -> Path:
    """The run folder that a resume=/checkpoint= path names: the folder itself, the folder holding
    checkpoints/<file> for a checkpoint file, and the run folder for its checkpoints/ folder (given that, a
    resumed run went on inside checkpoints/ and its next resume= went back to the older checkpoint). The names are
    read as given, before links are followed: a checkpoints/ linked to another disk was taken for the run folder."""
    named = as_given(path)  # (callers pass the path as given, not resolved)
    path = resolved(path)
    try:  # (a checkpoints/ without search permission: is_file raised it, a traceback)
        # the name as given first (a linked checkpoints/), then the link's target (a link elsewhere to a run's
        # checkpoints/ or its last.pt named that run before)
        if path.is_file():
            inside = next((p for p in (named, path) if p.parent.name == "checkpoints"), None)
            return resolved(inside.parent.parent) if inside is not None else path.parent
        # the name before any look inside: in a run folder this user may not search, that blamed its last.pt
        inside = next((p for p in (named, path) if p.name == "checkpoints"), None)
        if inside is not None and (path / "last.pt").is_file() and not (path / "checkpoints").is_dir():
            return resolved(inside.parent)
    except OSError as exc:
        raise unreadable_checkpoint(Path(exc.filename or path), exc.strerror or type(exc).__name__) from None
    return path


def checkpoint_file(path: str | Path) -> Path:
    """The file a resume=/checkpoint= path names: a run folder's checkpoints/last.pt (a folder without
    checkpoints/: its own last.pt), a file as it is."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    return path


def existing_checkpoint(path: str | Path, purpose: str) -> Path:
    """The checkpoint file `path` names (`checkpoint_file`), or one CheckpointError line when there is none, with
    the fix that `purpose` ("resume", "evaluate") has."""
    given, key = Path(path), KEY_OF[check_purpose(purpose)]
    file = given
    try:  # checkpoints/ without search permission: Path's is_dir and is_file raised it, a traceback
        file = checkpoint_file(path)
        file.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # nothing there: the checks below name what the path holds instead, and the fix
    except OSError as exc:
        raise unreadable_checkpoint(file, exc.strerror or type(exc).__name__) from None
    if file.is_file():
        return file
    odd = misplaced(given, file)
    if odd is not None and odd == given and not odd.is_dir():  # named so (/dev/null): no run's file to move away
        raise CheckpointError(f"{str(odd)!r} is not a regular file (a device, pipe or socket); point {key} at a run "
                              "folder or its checkpoints/last.pt")
    if odd is not None:  # a folder at checkpoints/last.pt (or a file at checkpoints/) was "has no checkpoint"
        kind = "a file, not the folder of the run's checkpoints" if odd.name == "checkpoints" else \
            "a folder, not a checkpoint file" if odd.is_dir() else "not a regular file (a device, pipe or socket)"
        raise CheckpointError(f"{str(odd)!r} is {kind}; move it away (a run's checkpoint is the file "
                              f"checkpoints/last.pt in its folder), then give {key} again")
    if given.is_dir() and (given / "config.yaml").is_file():  # a run folder stopped before its first checkpoint
        raise CheckpointError(f"run folder {str(given)!r} has no checkpoint (checkpoints/last.pt: the run stopped "
                              "before its first one, or it was removed); start it again in that folder with "
                              f"python -m agents.run {shell_arg('config', given / 'config.yaml')} "
                              f"{shell_arg('run_dir', given)}")
    if given.is_dir() and started_only(given):  # a run stopped (SIGKILL) after it took its folder, before config.yaml
        raise CheckpointError(f"run folder {str(given)!r} holds no checkpoint and no config.yaml: its run was stopped "
                              "while it started, before it wrote anything; start the run again with its own command "
                              f"line ({shell_arg('run_dir', given)} writes it into this folder)")
    if given.is_dir():  # not <folder>/last.pt, a path the user never named (the folder is no run)
        raise CheckpointError(f"no checkpoint in {str(given)!r} (no checkpoints/last.pt): it is not a run folder; "
                              f"point {key} at one (runs/<env>/<agent>/<time>_s<seed>)")
    raise CheckpointError(f"no checkpoint at {str(file)!r}: point {key} at a run folder that has "
                          "checkpoints/last.pt")


def unreadable_checkpoint(file: Path, why: str) -> CheckpointError:
    """A whole checkpoint out of reach (no read permission on it, or no search permission on a folder above it):
    resume= and agents.evaluate called it damaged (fix: start afresh), or stopped with a traceback."""
    return CheckpointError(f"cannot read checkpoint {str(file)!r} ({why}); give it (and the folders above it) read "
                           "permission, then retry")


def misplaced(given: Path, file: Path) -> Path | None:
    """What stands where a checkpoint should be, not being one: `given` itself, a folder named *.pt or a pipe,
    device or socket (`checkpoint=/dev/null` was "no checkpoint at '/dev/null'"); the run's checkpoints/last.pt, a
    folder (or a pipe); or its checkpoints/, a file. None if nothing does."""
    if not given.is_dir():
        return given if given.exists() and not given.is_file() else None
    if given.suffix == ".pt":
        return given
    if file.exists() and not file.is_file():
        return file
    folder = given / "checkpoints"
    return folder if folder.exists() and not folder.is_dir() else None


STARTING_FILES = (".run.lock", ".config.yaml.")  # what a run folder holds before its config.yaml: its lock (and the
# temp file of config.yaml's write); agents/run_lock.py's RUN_LOCK (torch-free here, as this module is)


def started_only(folder: Path) -> bool:
    """Whether `folder` holds a run's lock file and nothing else but the temp file of its config.yaml: a run killed
    after it made and locked its folder, before it wrote config.yaml (its resume= said "it is not a run folder")."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return False
    return STARTING_FILES[0] in names and all(n.startswith(STARTING_FILES) for n in names)
