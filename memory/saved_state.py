"""Checks of the settings and counters a saved memory state holds (the store's and the cache's files), each failure
one ValueError line that names the file: a damaged or edited file is refused when it is loaded, not at a later use."""

from __future__ import annotations

import inspect

import numpy as np

MAX_SAVED_COUNT = 2 ** 62  # a saved clock or counter: int64 with room to count on (2^63 and up failed at next use)


def saved_count(value, name: str, where: str) -> int:
    """A saved non-negative int (a clock, a counter) as an int, or a one-line ValueError naming `where` and it."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or not \
            0 <= value <= MAX_SAVED_COUNT:
        raise ValueError(f"{where}: {name} is {value!r}, expected an int in [0, 2^62] (damaged state)")
    return int(value)


def check_saved_config(what: str, saved: dict, current: dict) -> None:
    """Raise ValueError naming the first field where a saved config differs from the live object's."""
    for name, value in current.items():
        if name not in saved:  # (the fix below names the load that is running: edited, not mismatched)
            raise ValueError(f"{what}: the saved state lacks its setting {name!r}; it is damaged")
        if saved.get(name) != value:
            raise ValueError(f"{what}: saved state has {name}={saved.get(name)!r} but this one has {name}={value!r}; "
                             f"build it with the saved settings or use {what}.load(path)")


def build_from_saved(cls, cfg, where: str, skip: tuple[str, ...] = (), **given):
    """`cls(**cfg, **given)` from the settings ('config') a saved file holds, or one ValueError line naming what is
    wrong with them: none, a setting this version does not know (`skip` and `given` are no saved settings), or one
    missing. `where` names the file ("TieredKVCache: c.pt")."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} lacks its settings ('config'); it is damaged")
    unknown = set(map(str, cfg)) - (set(inspect.signature(cls.__init__).parameters) - {"self", *skip, *given})
    if unknown:
        raise ValueError(f"{where} has settings this version does not know ({', '.join(sorted(unknown))}) in its "
                         "'config'; it is damaged")
    try:
        return cls(**cfg, **given)
    except TypeError:  # a setting missing
        raise ValueError(f"{where} lacks some of its settings ('config'); it is damaged") from None
    except MemoryError as exc:  # sizes edited past this machine (capacity=10**12 asked numpy for 58 TiB)
        raise ValueError(f"{where}: its settings ask for more memory than is free ({str(exc)[:120]}); it is damaged "
                         "or was saved on a bigger machine") from None
