"""Haystack corpora for NeedleRecall: a generated Markov "text" or a user's text file, as content-token ids.

Episodes cut their haystack out of one corpus at a random offset, so building the corpus once makes every
episode's haystack a single gather.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

MARKOV_LENGTH = 1 << 16  # tokens in the generated corpus
MARKOV_SUCCESSORS = (0.45, 0.25, 0.12, 0.08)  # each symbol's likely next symbols; the remaining 0.1: any symbol
MARKOV_CHAINS = 64  # independent chains generated side by side, then concatenated


@functools.lru_cache(maxsize=8)
def markov_corpus(num_symbols: int, length: int, seed: int) -> np.ndarray:
    """(length,) int32 symbols in [0, num_symbols) from a sparse order-1 Markov source (text-like statistics).

    Read-only and cached: every env with the same arguments shares one corpus.
    """
    rng = np.random.default_rng(seed)
    # likely successors never include the symbol itself: no long runs of one character
    step = rng.integers(1, max(num_symbols, 2), size=(num_symbols, len(MARKOV_SUCCESSORS)))
    successors = (np.arange(num_symbols)[:, None] + step) % num_symbols
    cdf = np.cumsum(MARKOV_SUCCESSORS)
    steps = -(-length // MARKOV_CHAINS)
    out = np.empty((MARKOV_CHAINS, steps), dtype=np.int32)
    state = rng.integers(0, num_symbols, size=MARKOV_CHAINS)
    u = rng.random((steps, MARKOV_CHAINS))
    jump = rng.integers(0, num_symbols, size=(steps, MARKOV_CHAINS))
    for i in range(steps):
        out[:, i] = state
        choice = np.searchsorted(cdf, u[i])  # == len(cdf) for the uniform jump
        follow = successors[state, np.minimum(choice, len(cdf) - 1)]
        state = np.where(choice < len(cdf), follow, jump[i])
    corpus = out.reshape(-1)[:length].copy()
    corpus.setflags(write=False)
    return corpus


def text_sha256(text: str) -> str:
    """The hex sha256 of a haystack text (its UTF-8 bytes): what a checkpoint records of the file a run used."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_corpus(path, num_symbols: int) -> tuple[np.ndarray, list[str], str]:
    """A UTF-8 text file as (length,) int32 symbols, characters numbered by falling frequency.

    Returns the symbols, the character of each symbol id and `text_sha256` of the text as read (newlines as
    Python's text mode reads them: a file that only changed \\r\\n to \\n makes the same episodes and digest; a
    UTF-8 byte-order mark, which some editors write first, is no character of the text either). When
    the file has more distinct characters than `num_symbols`, the rarest ones share the last symbol id (shown as
    '?').
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"haystack_path must be a path to a UTF-8 text file, got {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"haystack_path={str(path)!r} is a directory: pass the path of a UTF-8 text file")
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/null, a pipe: was "no such file"
        raise ValueError(f"haystack_path={str(path)!r} is not a regular file (a device, pipe or socket): pass the path "
                         "of a UTF-8 text file")
    if not os.path.isfile(path):
        raise ValueError(f"haystack_path={str(path)!r}: no such file")
    try:
        with open(path, encoding="utf-8-sig") as fh:  # -sig: a leading byte-order mark is dropped
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"haystack_path={str(path)!r} cannot be read as UTF-8 text: {exc}") from None
    if not text:
        raise ValueError(f"haystack_path={str(path)!r} is empty")
    if "\x00" in text:  # valid UTF-8, but no text: a UTF-16 file without its byte-order mark (NUL between ASCII
        # characters, then ~half the haystack) or a binary file
        raise ValueError(f"haystack_path={str(path)!r} holds NUL characters, so it is no UTF-8 text (a UTF-16 file "
                         "without a byte-order mark, or a binary file); save it as UTF-8")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    # counted per code point, in blocks: np.unique(return_inverse=True) sorted the whole text (~40 bytes and
    # ~0.4 us a character: 20 MB took 9 s and 800 MB)
    per_char = np.zeros(0x110000, dtype=np.int64)
    for start in range(0, len(codes), 1 << 22):
        per_char += np.bincount(codes[start:start + (1 << 22)], minlength=0x110000)
    chars = np.flatnonzero(per_char)  # ascending, as np.unique gave them
    counts = per_char[chars]
    rank = np.empty(len(chars), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(chars))
    lookup = np.zeros(0x110000, dtype=np.int32)
    lookup[chars] = np.minimum(rank, num_symbols - 1)
    symbols = lookup[codes]
    names = [""] * min(len(chars), num_symbols)
    for char, r in zip(chars, rank, strict=True):
        if r < num_symbols:
            names[r] = chr(int(char))
    if len(chars) > num_symbols:
        names[-1] = "?"
    return symbols, names, text_sha256(text)
