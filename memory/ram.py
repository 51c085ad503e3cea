"""This machine's memory, and the check that a store's or cache's arrays (or a slot bank's state) fit in it before
they are made. Where the kernel overcommits (vm.overcommit_memory=1: some VMs and containers) an allocation past the
memory succeeds, and the process is killed without a word (SIGKILL) once the arrays are filled, instead of raising
MemoryError: on such a machine an oversized store ends a run, and the checks that should refuse it, that way."""

from __future__ import annotations

import os
from pathlib import Path


def machine_bytes() -> int | None:
    """Physical memory plus swap, in bytes; None where the system does not say."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such sysconf name (Windows; some Unixes)
        return None
    swap = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("SwapTotal:"):
                swap = int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):  # not Linux: the memory alone
        pass
    return ram + swap if ram > 0 else None


def check_fits(nbytes: int, what: str) -> None:
    """MemoryError, in numpy's words ("Unable to allocate 2.37 TiB for ..."), where `nbytes` exceed this machine's
    memory and swap: what `agents.allocation` reads as a failed allocation of that size."""
    have = machine_bytes()
    if have is not None and nbytes > have:
        from memory.metrics import format_bytes

        raise MemoryError(f"Unable to allocate {format_bytes(nbytes)} for {what}: more than this machine's "
                          f"{format_bytes(have)} of memory and swap")
