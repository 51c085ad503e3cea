"""Ctrl+C or SIGTERM while an entry point starts: its imports (torch, Hydra, matplotlib) take seconds, before any
handler of its own is in place. Imports nothing slow, so an entry point calls `guard_startup` under its main
guard above its slow imports, and `end_startup` first thing in main() (agents/run.py, agents/evaluate.py).
"""

from __future__ import annotations

import signal
import sys


def guard_startup(written: str) -> None:
    """Until `end_startup`, SIGINT and SIGTERM print `interrupted while starting; <written>` and exit 130 (a
    KeyboardInterrupt traceback from inside importlib for Ctrl+C; for SIGTERM, exit 143 and nothing said)."""
    def _interrupted_while_starting(signum, frame):
        print(f"\ninterrupted while starting; {written}", file=sys.stderr)
        raise SystemExit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_starting)


def end_startup() -> None:
    """main() has begun: Ctrl+C is KeyboardInterrupt again, and SIGTERM is back to its default where the startup
    guard had it (the command's own handling, `interrupts.sigterm_as_interrupt`, takes it over from there). Only in
    the main thread, where handlers can be set."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if getattr(signal.getsignal(signal.SIGTERM), "__name__", None) == "_interrupted_while_starting":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
