"""How many examples each hypothesis test draws: its own count (hypothesis's default 100 where it names none: the
profile tests/conftest.py loads), times MEMSTREAM_EXAMPLES (default 1).

A longer hunt is one variable away: `MEMSTREAM_EXAMPLES=20 pytest tests/test_memory_undo.py` draws 20x as many
programs (README "Development": what such hunts found)."""

import math
import os

VARIABLE = "MEMSTREAM_EXAMPLES"


def scale() -> float:
    """The factor MEMSTREAM_EXAMPLES sets; anything but a positive number is one line naming the variable."""
    text = os.environ.get(VARIABLE, "").strip() or "1"
    try:
        factor = float(text)
    except ValueError:
        factor = float("nan")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{VARIABLE}={text!r}: set it to a positive number (how many times each hypothesis test's own "
                         "examples to draw), or unset it for 1")
    return factor


def examples(n: int) -> int:
    """`n` examples (a test's own count) scaled by MEMSTREAM_EXAMPLES; at least 1."""
    return max(1, round(n * scale()))
