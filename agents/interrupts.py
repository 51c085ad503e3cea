"""Ctrl+C and SIGTERM in the entry points: SIGTERM (a scheduler's stop, `kill`) raises KeyboardInterrupt as Ctrl+C
does, and both are held back while code runs that an exception must not stop halfway (`interrupts_held`)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


def interrupt(signum, frame):
    """SIGTERM handler (a scheduler's stop, `kill`): raise KeyboardInterrupt, so it ends a command as Ctrl+C does:
    one line, and the cleanup a plain SIGTERM skips (the cache's cold-tier temp folders)."""
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises KeyboardInterrupt (`interrupt`) in the main thread; the handler before
    is put back after. Off the main thread (where handlers cannot be set) nothing changes."""
    previous = signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_held():
    """While the block runs, SIGINT and SIGTERM are noted, not handled; after it, each one that came is raised again
    for the handler in force (KeyboardInterrupt, or the default action). A second signal of a kind is handled at
    once (a Ctrl+C that insists is not held up by a block that does not end). Usable as a decorator.

    Why: KeyboardInterrupt is raised wherever the main thread is when the signal comes. Inside TensorBoard's writer
    it could land between queue.put's item and its notify; the writer's thread then slept up to flush_secs (120 s)
    before the interrupted run's closing flush could end, so a stopped run hung for two minutes after its last line.
    Off the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    # read first: a signal between two installs leaks none; a handler set outside Python (None here: Ray's C++ core
    # in its workers) cannot be put back, so that signal is left to it
    previous = {sig: handler for sig in HELD if (handler := signal.getsignal(sig)) is not None}

    def note(signum, frame):
        if signum not in came:
            came.append(signum)
            return
        came.remove(signum)  # the second: its handler is put back and acts now (once: not again after the block)
        signal.signal(signum, previous[signum])
        signal.raise_signal(signum)

    try:
        for sig in previous:
            signal.signal(sig, note)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(came):  # each kind once, in the order they came
            signal.raise_signal(sig)  # to this thread: its handler runs before raise_signal returns
