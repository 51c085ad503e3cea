"""The torch thread count of a restored run: the one it computed with, since the count changes the last bits of
torch's reductions (a default run resumed under another OMP_NUM_THREADS differed in 117 tensors from one that
was never stopped)."""

from __future__ import annotations

import os

from agents.cli_args import counted


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all of them where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def adopt_saved_threads(saved: int | None, given: int) -> None:
    """Compute with the run's own thread count `saved` (from its checkpoint; None in older ones) unless a count
    was given (train.threads > 0)."""
    if saved and not given:
        import torch  # (here: `usable_cores` serves agents.benchmark, which checks its config before torch loads)

        torch.set_num_threads(saved)


def threads_note(saved: int | None, given: int, key: str) -> str | None:
    """One line on a restored run's thread count, or None: another count given with `key` than the run's, or the
    run's own above this machine's cores (kept for the same numbers, but slower)."""
    if not saved:
        return None
    if given and given != saved:
        return (f"note: {key}={given}: the run computed with {counted(saved, 'torch thread')}; with {given} its "
                f"numbers can differ in the last bits from the run's own (leave {key} out to keep {saved})")
    cores = usable_cores()
    if saved > cores:  # its own count: train.threads=0 there, or the run's train.threads (it had no note before)
        return (f"note: the run computed with {saved} torch threads, more than the {cores} cores here: kept, so its "
                f"numbers stay the same, but slower; {key}={cores} is faster, its numbers then differ in the last bits")
    return None
