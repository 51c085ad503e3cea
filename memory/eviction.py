"""Victim selection shared by FaissStore and TieredKVCache: the k entries with the lowest priority.

Both keep one priority number per row (insertion order for fifo, last-access stamp for lru, importance for
importance) plus a unique insertion sequence that breaks ties, oldest first. Selection is O(n) with
argpartition instead of a full sort, because it runs on every add once a store or tier is full.
"""

from __future__ import annotations

import numpy as np


def lowest(primary: np.ndarray, secondary: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` smallest (primary, secondary) pairs, smallest first.

    primary (n,) float64: the policy's priority (-inf marks free rows, so they are taken first);
    secondary (n,) int64: unique tie-breaker (insertion sequence). Returns (min(k, n),) int64.
    """
    n = len(primary)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        threshold = primary[np.argpartition(primary, k - 1)[:k]].max()
        below = np.flatnonzero(primary < threshold)
        ties = np.flatnonzero(primary == threshold)
        need = k - len(below)
        if len(ties) > need:  # several rows share the cut-off priority: keep the oldest of them
            ties = ties[np.argpartition(secondary[ties], need - 1)[:need]]
        chosen = np.concatenate([below, ties])
    else:
        chosen = np.arange(n)
    return chosen[np.lexsort((secondary[chosen], primary[chosen]))].astype(np.int64)
