"""agents.evaluate's out= file: where it goes, which files it may not write over, and the atomic write.

The checks load no torch: `agents.evaluate` makes them while it starts (agents/evaluate_args.py)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from agents.checkpoint_paths import checkpoint_file
from agents.cli_args import shortened, unusable_path
from agents.config import ConfigError
from memory.disk import written_path


def run_output(path: Path, run_dir: Path, checkpoint: Path) -> str | None:
    """What the run wrote that `path` is (its checkpoint, checkpoints/, metrics.json, config.yaml, TensorBoard
    events, plots/), or None: an eval JSON, earlier ones included, may be written over."""
    path = path.resolve()  # ../ and symlinks: out=x/../metrics.json is metrics.json
    if path == checkpoint_file(checkpoint.resolve()):
        return "the run's checkpoint"
    try:
        parts = path.relative_to(run_dir.resolve()).parts
    except ValueError:  # outside the run folder
        return None
    if parts and parts[0] in ("checkpoints", "plots"):
        return f"in the run's {parts[0]}/ folder"
    if len(parts) == 1 and parts[0] in ("metrics.json", "config.yaml"):
        return f"the run's {parts[0]}"
    if len(parts) == 1 and parts[0].startswith("events.out.tfevents."):
        return "the run's TensorBoard event file"
    return None


def check_out_file(out: str | Path, run_dir: Path, checkpoint: Path) -> None:
    """out= (as given, `~` allowed; relative: inside the run folder) must name a file that can be written and that the
    run did not write (out=checkpoints/last.pt replaced the checkpoint with the JSON): checked before the evaluation
    runs, not after."""
    if str(out).endswith(("/", os.sep)):  # Path() drops the slash: out=results/ wrote a file named results
        folder = run_dir / Path(out).expanduser()
        # a file there (out=metrics.json/): no file can go inside it, so the example is one beside the run's own
        example = "eval.json" if folder.exists() and not folder.is_dir() else f"{str(out)}eval.json"
        raise ConfigError(f"out={str(out)!r} names a folder (it ends with {str(out)[-1]}); name a file, e.g. "
                          f"out={example}")
    out = Path(out).expanduser()
    path = run_dir / out
    if why := unusable_path(str(path.absolute())):  # (path.is_dir() was an OSError traceback, a loop's resolve() a
        raise ConfigError(f"out={shortened(str(out))}: {why}; name another file")  # RuntimeError one)
    ambiguous = False
    if not out.is_absolute() and unusable_path(str(out.absolute())) is None:  # (words that lead round a loop from
        # the working folder name nothing there, so they cannot be the run folder's read from here)
        from_here = out.resolve()  # the same words read from the working folder
        # from inside the run folder, words that stay in it (no leading ..; links in it are the user's business)
        # read as the documented path in it
        stays = Path(os.path.normpath(out)).parts[:1] != ("..",) and Path.cwd().resolve().is_relative_to(
            run_dir.resolve())
        ambiguous = from_here != path.resolve() and from_here.is_relative_to(run_dir.resolve()) and not stays
    if ambiguous:
        # out=<run>/metrics.json, <run> relative: written to <run>/<run>/metrics.json, past the checks below. (Not
        # for a path that stays in the run folder from inside it: the default eval.json was refused from
        # <run>/checkpoints, each suggested path one folder deeper; out=../eval.json from there is still refused.)
        inside = from_here.relative_to(run_dir.resolve())
        raise ConfigError(f"out={str(out)!r}: a relative out= is taken inside the run folder (this one would be "
                          f"{str(path)!r}); give the path inside it (out={inside}) or an absolute path")
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:  # a folder above it without search permission: is_dir raised it, a traceback
        raise ConfigError(f"out={str(path)!r}: cannot look there ({exc.strerror or exc}); name a file "
                          "elsewhere") from None
    if path.is_dir():
        raise ConfigError(f"out={str(path)!r} is a folder; name a file (e.g. out=eval.json)")
    what = run_output(path, run_dir, checkpoint)
    if what is not None:
        raise ConfigError(f"out={str(path)!r} is {what}; the evaluation does not write over the run's own "
                          "files: name another file (e.g. out=eval.json)")
    if (path.exists() or path.is_symlink()) and not earlier_evaluation(path):  # another run's files, /dev/null
        raise ConfigError(f"out={str(path)!r} exists and is not an earlier evaluation's JSON; the evaluation "
                          "writes over no other file: name another file (e.g. out=eval.json)")
    # missing folders below it are created by the write; a link is written through, into its target's folder
    existing = next(p for p in written_path(path).parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"out={str(path)!r}: {str(existing)!r} is a file, not a folder; name another file")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"out={str(path)!r}: {str(existing)!r} is not writable; name a file elsewhere")


def earlier_evaluation(path: Path) -> bool:
    """Whether `path` is a regular file holding an evaluation's JSON (one evaluation, or a sweep's), the only
    existing file out= may write over: os.replace put the JSON in place of any other (a device such as /dev/null)."""
    path = path.resolve()
    try:
        if not path.is_file() or path.stat().st_size > 2**26:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False
    return isinstance(data, dict) and ("accuracy_by_task" in data or isinstance(data.get("evaluations"), list))


def write_out_file(path: Path, result: dict) -> None:
    from agents.report import write_json_atomic  # (torch and matplotlib: the checks above run while evaluate starts)
    from memory.disk import free_there

    try:
        write_json_atomic(path, result)
    except OSError as exc:  # what check_out_file cannot foresee (a full disk, a folder that went away)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # another file on that disk fails too: it said "name another"
            folder = next(p for p in path.parents if p.exists())
            raise ConfigError(f"out={str(path)!r}: cannot write it ({exc.strerror}; {free_there(folder)}); free "
                              "space, or name a file on another disk") from None
        raise ConfigError(f"out={str(path)!r}: cannot write it ({exc.strerror or exc}); name another file") from None
