"""Continual-learning metrics, exactly as defined in DESIGN.md section 7 (numpy only, no torch).

R is the (T, T) accuracy matrix: R[i][j] = accuracy on task j evaluated just after training on task i;
b is the (T,) accuracy of the untrained agent on each task.

    ACC        = mean_j R[T-1][j]
    BWT        = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])
    FWT        = 1/(T-1) * sum_{j>=1}  (R[j-1][j] - b[j])
    forgetting = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])          (Chaudhry et al. 2018)

Missing evaluations (NaN), the policy:
- Entries on or below the diagonal (j <= i: task j was already trained when evaluated) are required. A NaN
  there raises ValueError naming the entry. For the metrics after task k of T, pass R[:k+1, :k+1].
- Entries above the diagonal (task j evaluated before it was trained) are optional, since many schedules
  evaluate only the tasks seen so far. FWT skips a term whose R[j-1][j] or b[j] is NaN and is None when no
  term is left; forgetting's max over l ignores NaN entries (R[j][j] is always present).
With T == 1, BWT, FWT and forgetting do not apply and are None; ACC is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memory.metrics import kaplan_meier  # noqa: F401  (re-exported: plots and tests use it from here)


def _check_matrix(R) -> np.ndarray:
    """Validate R and return it as a float64 (T, T) array."""
    try:
        R = np.asarray(R, dtype=np.float64)  # (T, T)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"R must be a (T, T) array of accuracies in [0, 1]; cannot convert: {exc}") from None
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a square (T, T) accuracy matrix with T >= 1; got shape {R.shape}")
    _check_range("R", R)
    missing = np.argwhere(np.isnan(np.tril(R)))  # NaN on or below the diagonal: required entries
    if missing.size:
        i, j = (int(x) for x in missing[0])
        raise ValueError(
            f"R[{i}][{j}] is NaN: task {j} was not evaluated after training task {i}; every task seen so far "
            f"must be evaluated (for the metrics after task k pass R[:k+1, :k+1])"
        )
    return R


def _check_untrained(b, num_tasks: int) -> np.ndarray:
    """Validate b and return it as a float64 (T,) array (NaN allowed: not measured)."""
    b = np.asarray(b, dtype=np.float64)  # (T,)
    if b.shape != (num_tasks,):
        raise ValueError(f"b must have shape ({num_tasks},), one untrained accuracy per task; got {b.shape}")
    _check_range("b", b)
    return b


def _check_range(name: str, accuracies: np.ndarray) -> None:
    """Accuracies lie in [0, 1]; NaN (not evaluated) is allowed here and handled by the caller."""
    low, high = np.nanmin(accuracies, initial=0.0), np.nanmax(accuracies, initial=1.0)
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} holds accuracies, allowed range [0, 1]; got values in [{low}, {high}]")


def acc(R) -> float:
    """Average accuracy over all T tasks after training on the last one: mean_j R[T-1][j]."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def bwt(R) -> float | None:
    """Backward transfer: mean change on earlier tasks since just after learning them (< 0: forgot)."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T == 1:
        return None
    earlier = np.arange(T - 1)
    return float((R[-1, earlier] - R[earlier, earlier]).mean())


def fwt(R, b) -> float | None:
    """Forward transfer: accuracy on task j just before training on it, minus the untrained accuracy b[j].

    None when T == 1, when b is None, or when no task j >= 1 was evaluated before its training."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T == 1 or b is None:
        return None
    b = _check_untrained(b, T)
    later = np.arange(1, T)
    terms = R[later - 1, later] - b[later]  # (T-1,), NaN where not evaluated
    terms = terms[~np.isnan(terms)]
    return float(terms.mean()) if terms.size else None


def forgetting(R) -> float | None:
    """Average forgetting: mean over j < T-1 of the best accuracy on task j before the end minus the last."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T == 1:
        return None
    best_before_end = np.nanmax(R[: T - 1, : T - 1], axis=0)  # (T-1,); column j always holds R[j][j]
    return float((best_before_end - R[-1, : T - 1]).mean())


def continual_metrics(R, b=None) -> dict[str, float | None]:
    """The four section-7 metrics {"ACC", "BWT", "FWT", "forgetting"}; one that does not apply is None."""
    return {"ACC": acc(R), "BWT": bwt(R), "FWT": fwt(R, b), "forgetting": forgetting(R)}


def distance_buckets(max_distance: int) -> np.ndarray:
    """Log-spaced bucket upper bounds 1, 2, 4, ..., up to the first power of two >= max_distance.  # (K,)"""
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int >= 1; got {max_distance!r}")
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1 (the largest distance in steps); got {max_distance}")
    num = int(np.ceil(np.log2(max_distance))) + 1 if max_distance > 1 else 1
    return 2 ** np.arange(num, dtype=np.int64)


class AccuracyByKey:
    """Streaming accuracy keyed by an integer: a distance bucket (edges given) or an exact key (a delay).

    With `edges` (increasing bucket upper bounds), key k counts in the first bucket whose upper bound is >= k,
    so bucket e holds the keys in (previous edge, e]; a key above the last edge raises ValueError. With
    edges=None every distinct key is its own bucket. Negative keys (distance -1: not applicable) are ignored.
    """

    def __init__(self, edges: Sequence[int] | np.ndarray | None = None):
        if edges is None:
            self.edges = None
            self._correct: dict[int, int] = {}
            self._total: dict[int, int] = {}
            return
        edges = np.asarray(edges)
        if edges.ndim != 1 or edges.size == 0 or not np.issubdtype(edges.dtype, np.integer):
            raise ValueError(f"edges must be a non-empty 1-D list of ints (bucket upper bounds); got {edges}")
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"edges must be strictly increasing; got {edges.tolist()}")
        self.edges = edges.astype(np.int64)  # (K,)
        self._bucket_correct = np.zeros(len(edges), dtype=np.int64)  # (K,)
        self._bucket_total = np.zeros(len(edges), dtype=np.int64)  # (K,)

    def update(self, keys, correct) -> None:
        """Count one batch. keys: (n,) ints, negative = ignored; correct: (n,) bools (same shape as keys)."""
        keys = np.asarray(keys).ravel()  # (n,)
        correct = np.asarray(correct).ravel()  # (n,)
        if keys.size and not np.issubdtype(keys.dtype, np.integer):
            raise TypeError(f"keys must be integers (distances or delays); got dtype {keys.dtype}")
        if correct.size and correct.dtype != np.bool_:
            raise TypeError(f"correct must be booleans; got dtype {correct.dtype}")
        if keys.shape != correct.shape:
            raise ValueError(f"keys and correct must have equal lengths; got {keys.size} and {correct.size}")
        used = keys >= 0
        keys, correct = keys[used].astype(np.int64), correct[used]
        if keys.size == 0:
            return
        if self.edges is None:
            uniq, inverse = np.unique(keys, return_inverse=True)
            hits = np.bincount(inverse, weights=correct, minlength=uniq.size).astype(np.int64)
            counts = np.bincount(inverse, minlength=uniq.size)
            for key, hit, count in zip(uniq.tolist(), hits.tolist(), counts.tolist(), strict=True):
                self._correct[key] = self._correct.get(key, 0) + hit
                self._total[key] = self._total.get(key, 0) + count
            return
        if keys.max() > self.edges[-1]:
            raise ValueError(
                f"key {int(keys.max())} is above the last bucket edge {int(self.edges[-1])}; "
                f"build the edges with distance_buckets(max_distance) for the largest distance"
            )
        bucket = np.searchsorted(self.edges, keys, side="left")  # (n,) index of the first edge >= key
        size = self.edges.size
        self._bucket_correct += np.bincount(bucket, weights=correct, minlength=size).astype(np.int64)
        self._bucket_total += np.bincount(bucket, minlength=size)

    def counts(self) -> dict[int, tuple[int, int]]:
        """{bucket upper bound or key: (correct, total)}, sorted by key."""
        if self.edges is None:
            return {k: (self._correct[k], self._total[k]) for k in sorted(self._total)}
        return {
            int(e): (int(c), int(t))
            for e, c, t in zip(self.edges, self._bucket_correct, self._bucket_total, strict=True)
        }

    def result(self) -> dict[int, float | None]:
        """{bucket upper bound or key: accuracy}; None for a bucket that saw no scored step."""
        return {k: (c / t if t else None) for k, (c, t) in self.counts().items()}

    def reset(self) -> None:
        """Forget all counts (keeps the edges)."""
        self.__init__(None if self.edges is None else self.edges)

    def state_dict(self) -> dict:
        """Plain python types only (ints and lists), safe for torch.load(weights_only=True) and JSON."""
        counts = self.counts()
        return {
            "edges": None if self.edges is None else self.edges.tolist(),
            "keys": list(counts),
            "correct": [c for c, _ in counts.values()],
            "total": [t for _, t in counts.values()],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore counts saved by state_dict(); the edges must match this accumulator's."""
        missing = {"edges", "keys", "correct", "total"} - set(state)
        if missing:
            raise ValueError(f"AccuracyByKey state lacks {sorted(missing)}; was it written by state_dict()?")
        mine = None if self.edges is None else self.edges.tolist()
        if state["edges"] != mine:
            raise ValueError(f"AccuracyByKey state has edges {state['edges']}, this accumulator has {mine}")
        keys, correct, total = (list(state[k]) for k in ("keys", "correct", "total"))
        if not len(keys) == len(correct) == len(total):
            raise ValueError("AccuracyByKey state is damaged: keys, correct and total differ in length")
        if self.edges is None:
            self._correct = {int(k): int(c) for k, c in zip(keys, correct, strict=True)}
            self._total = {int(k): int(t) for k, t in zip(keys, total, strict=True)}
        else:
            if [int(k) for k in keys] != mine:
                raise ValueError("AccuracyByKey state is damaged: bucket keys do not match its edges")
            self._bucket_correct = np.asarray(correct, dtype=np.int64)
            self._bucket_total = np.asarray(total, dtype=np.int64)


def bootstrap_ci(values, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean over seeds: (mean, low, high).

    values: (S,) one number per seed, no None/NaN (drop seeds where the metric does not apply first).
    With one value the interval is that value."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.9 for a 90% interval; got {level}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1; got {n_boot!r}")
    if any(v is None for v in values):
        raise ValueError("bootstrap_ci got a None value; drop the seeds where the metric does not apply")
    values = np.asarray(values, dtype=np.float64).ravel()  # (S,)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value (one per seed); got none")
    if np.isnan(values).any():
        raise ValueError("bootstrap_ci got a NaN value; drop the seeds where the metric does not apply")
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)  # (n_boot,)
    low, high = np.quantile(resampled, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return mean, float(low), float(high)
