"""A new output folder named by the time it starts (a run's, a sweep's, a benchmark's), claimed by making it.

mkdir fails on a folder that exists, so commands started in the same second, in parallel too, each get their own:
<stamp>, then <stamp>-1, <stamp>-2 ... An exists() check before a later mkdir let two share one (two benchmarks
wrote into one folder, one's run failing on the other's; a second sweep was refused as if it resumed the first).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"  # a folder's time stamp, as `time_stamp` makes it
STAMP_LENGTH = 19  # its characters: a name <stamp>-<n> is cut back to its stamp by it


def time_stamp() -> str:
    """Now, as the stamp of a new folder's name (2026-12-04_21-31-36)."""
    return time.strftime(STAMP_FORMAT)


def stamped_names(parent: Path, stamp: str, tail: str = "") -> Iterator[Path]:
    """parent/<stamp><tail>, then parent/<stamp>-1<tail>, parent/<stamp>-2<tail> ... (tail: a run's `_s<seed>`)."""
    for n in itertools.count():
        yield parent / (f"{stamp}{tail}" if n == 0 else f"{stamp}-{n}{tail}")


def first_free(names: Iterable[Path]) -> Path:
    """The first of `names` that does not exist yet (a name to show; `claim_new_folder` makes one)."""
    return next(path for path in names if not path.exists())


def claim_new_folder(names: Iterable[Path]) -> tuple[Path, list[Path]]:
    """Make the first of `names` that no one has made (with its missing parents). Returns it and the folders this
    call made, deepest first (to remove them again while empty). OSError where one cannot be made for another
    reason (a file in the way of a parent, no permission: the caller's one-line error)."""
    for path in names:
        made = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True)
            return path, made
        except FileExistsError:
            if not path.exists():  # a dangling link at the name or a parent, not a taken name
                raise
    raise AssertionError("unreachable: `names` ended")  # (the names are endless)


def remove_made_folders(made: list[Path]) -> None:
    """Undo a claim (`claim_new_folder`'s made folders, deepest first) where nothing was written: each folder while
    empty (rmdir never removes a folder that holds anything)."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            return
