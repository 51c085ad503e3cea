"""Command-line helpers: argparse types for the benchmark scripts (benchmarks/*.py: a bad number is argparse's
usage line at once, not a traceback or a table of zeros later) and the SIGTERM handler of the entry points."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0")


def _number(text: str, kind, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
    return value


def interrupt(signum, frame):
    """SIGTERM handler (a scheduler's stop, `kill`): raise KeyboardInterrupt, so it ends a command as Ctrl+C does:
    one line, and the cleanup a plain SIGTERM skips (the cache's cold-tier temp folders)."""
    raise KeyboardInterrupt
