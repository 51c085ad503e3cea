"""Continual-learning metrics, as README "Continual-learning metrics" defines them (numpy only, no torch), any
schedule.

R is the (K, T) accuracy matrix, one row per training *block* (a maximal run of consecutive training episodes on
one task): R[k][j] = accuracy on task j evaluated just after block k; tasks[k] = the task trained in block k;
b is the (T,) accuracy of the untrained agent on each task. For task j, f_j / k_j are its first / last block.

    ACC        = mean_j R[K-1][j]
    BWT        = mean over j with k_j < K-1 of (R[K-1][j] - R[k_j][j])
    FWT        = mean over j with f_j >= 1  of (R[f_j - 1][j] - b[j])
    forgetting = mean over j with k_j < K-1 of (max_{l<K-1} R[l][j] - R[K-1][j])   (Chaudhry et al. 2018)

With the default tasks (None: R is square, block k trains task k, one pass over the tasks) these are exactly
section 7's: ACC = mean_j R[T-1][j], BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j]), FWT = 1/(T-1) sum_{j>=1}
(R[j-1][j] - b[j]), forgetting = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j]). A schedule that revisits tasks
(0, 1, 0, 1) needs the block rows: indexed by task, the second pass would overwrite the first and FWT would read
an accuracy measured after the task had already been trained.

Missing evaluations (NaN), the policy:
- Entries R[k][j] with k >= f_j (task j already trained when evaluated) are required. A NaN there raises
  ValueError naming the entry. For the metrics after block k, pass R[:k+1] with the columns of the tasks trained
  so far (in the sequential case R[:k+1, :k+1]).
- Entries with k < f_j (task j evaluated before it was trained) are optional, since many schedules evaluate only
  the tasks seen so far. FWT skips a term whose R[f_j - 1][j] or b[j] is NaN and is None when no term is left;
  forgetting's max over l ignores NaN entries (R[k_j][j] is always present).
BWT and forgetting are None when every task's last block is the final one (e.g. T == 1), FWT when no task starts
after block 0; ACC is always defined. Blocks are the schedule's: under ContinualShift's shift="gradual" the end of
block f_j - 1 already trains on task j (the blend), so FWT's R[f_j - 1][j] includes that training (README).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class _Blocks(NamedTuple):
    R: np.ndarray  # (K, T) accuracies
    first: np.ndarray  # (T,) first block that trains each task (f_j)
    last: np.ndarray  # (T,) last block that trains each task (k_j)


def schedule_blocks(schedule) -> tuple[np.ndarray, np.ndarray]:
    """The training blocks of a schedule (the task of each training episode): (starts, tasks), both (K,).

    starts[k] is the first episode of block k, tasks[k] its task. Episode e belongs to the last block whose start
    is <= e (so episodes past the schedule's end belong to its last block)."""
    schedule = np.asarray(schedule).ravel()  # (E,)
    if schedule.size == 0 or not np.issubdtype(schedule.dtype, np.integer):
        raise ValueError(f"schedule must be a non-empty list of int task ids, one per episode; got {schedule}")
    starts = np.flatnonzero(np.r_[True, schedule[1:] != schedule[:-1]])  # (K,)
    return starts, schedule[starts].astype(np.int64)


def env_schedule(env) -> tuple[np.ndarray, np.ndarray, int] | None:
    """An env's training schedule as (block starts, block tasks, episodes) (`schedule_blocks`), or None when it has
    none: from its compact `schedule_blocks` / `schedule_length` when it has them (ContinualShift; its per-episode
    `schedule` tuple can hold 5 x 10^8 entries), else from a `schedule` of one task per episode."""
    blocks = getattr(env, "schedule_blocks", None)
    if blocks is not None:
        return blocks[0], blocks[1], int(env.schedule_length)
    schedule = getattr(env, "schedule", None)
    if schedule is None or not len(schedule):
        return None
    return *schedule_blocks(schedule), len(schedule)


def accuracy_shape(env) -> tuple[int, int]:
    """(K, T): the shape of a run's accuracy matrix R on `env` (one row per training block of its schedule, one
    without a schedule; one column per task), which a checkpoint's R must have to be restored on it."""
    sched = env_schedule(env)
    return 1 if sched is None else len(sched[1]), int(env.num_tasks)


def _check_matrix(R, tasks=None) -> _Blocks:
    """Validate R (and the block tasks) and return R as float64 with each task's first and last block."""
    try:
        R = np.asarray(R, dtype=np.float64)  # (K, T)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"R must be a (K, T) array of accuracies in [0, 1]; cannot convert: {exc}") from None
    sequential = tasks is None
    if sequential:
        if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
            raise ValueError(f"R must be a square (T, T) accuracy matrix with T >= 1; got shape {R.shape}")
        tasks = np.arange(R.shape[0])
    else:
        if R.ndim != 2 or R.shape[0] < 1 or R.shape[1] < 1:
            raise ValueError(f"R must be a (K, T) accuracy matrix (one row per block) with K, T >= 1; got {R.shape}")
        tasks = _check_tasks(tasks, *R.shape)
    _check_range("R", R)
    K, T = R.shape
    first = np.array([np.flatnonzero(tasks == j)[0] for j in range(T)])  # (T,)
    last = np.array([np.flatnonzero(tasks == j)[-1] for j in range(T)])  # (T,)
    required = np.arange(K)[:, None] >= first[None, :]  # (K, T): task j trained by the end of block k
    missing = np.argwhere(np.isnan(R) & required)
    if missing.size:
        k, j = (int(x) for x in missing[0])
        raise ValueError(
            f"R[{k}][{j}] is NaN: task {j} was not evaluated after training task {k}; every task seen so far "
            f"must be evaluated (for the metrics after task k pass R[:k+1, :k+1])" if sequential else
            f"R[{k}][{j}] is NaN: task {j} was not evaluated after block {k} (task {int(tasks[k])}); every task "
            f"trained so far must be evaluated (for the metrics after block k pass R[:k+1] and its tasks' columns)"
        )
    return _Blocks(R, first, last)


def _check_tasks(tasks, K: int, T: int) -> np.ndarray:
    """tasks: (K,) int task ids in [0, T), every column's task trained in some block."""
    tasks = np.asarray(tasks)
    if tasks.shape != (K,) or (tasks.size and not np.issubdtype(tasks.dtype, np.integer)):
        raise ValueError(f"tasks must hold one int task id per row of R, shape ({K},); got {tasks.tolist()}")
    if tasks.min() < 0 or tasks.max() >= T:
        raise ValueError(f"tasks must be task ids in [0, {T}) (the columns of R); got {tasks.tolist()}")
    never = np.setdiff1d(np.arange(T), tasks)
    if never.size:
        raise ValueError(f"task {int(never[0])} is a column of R but no block trains it (tasks {tasks.tolist()}); "
                         f"pass only the columns of the tasks trained so far")
    return tasks


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


def acc(R, tasks=None) -> float:
    """Average accuracy over all tasks after the last block: mean_j R[K-1][j]."""
    return float(_check_matrix(R, tasks).R[-1].mean())


def bwt(R, tasks=None) -> float | None:
    """Backward transfer: mean change on tasks trained before the last block since their own last block (< 0:
    forgot); None when every task's last block is the final one."""
    R, _, last = _check_matrix(R, tasks)
    earlier = np.flatnonzero(last < R.shape[0] - 1)  # tasks j with k_j < K-1, ascending
    if earlier.size == 0:
        return None
    return float((R[-1, earlier] - R[last[earlier], earlier]).mean())


def fwt(R, b, tasks=None) -> float | None:
    """Forward transfer: accuracy on task j just before its first block, minus the untrained accuracy b[j].

    None when no task starts after block 0 (T == 1), when b is None, or when no such task was evaluated before
    its training."""
    R, first, _ = _check_matrix(R, tasks)
    later = np.flatnonzero(first >= 1)  # tasks j with f_j >= 1, ascending
    if later.size == 0 or b is None:
        return None
    b = _check_untrained(b, R.shape[1])
    terms = R[first[later] - 1, later] - b[later]  # NaN where not evaluated
    terms = terms[~np.isnan(terms)]
    return float(terms.mean()) if terms.size else None


def forgetting(R, tasks=None) -> float | None:
    """Average forgetting: mean over the tasks of BWT of the best accuracy before the last block minus the last."""
    R, _, last = _check_matrix(R, tasks)
    K = R.shape[0]
    earlier = np.flatnonzero(last < K - 1)
    if earlier.size == 0:
        return None
    best_before_end = np.nanmax(R[: K - 1][:, earlier], axis=0)  # column j always holds R[k_j][j]
    return float((best_before_end - R[-1, earlier]).mean())


def continual_metrics(R, b=None, tasks=None) -> dict[str, float | None]:
    """The four section-7 metrics {"ACC", "BWT", "FWT", "forgetting"}; one that does not apply is None.

    tasks: (K,) the task trained in each row (block) of R; None: R is square, row i after training task i."""
    return {"ACC": acc(R, tasks), "BWT": bwt(R, tasks), "FWT": fwt(R, b, tasks), "forgetting": forgetting(R, tasks)}


MAX_DISTANCE = 2**62  # distance_buckets' last edge, 2**ceil(log2(max_distance)), must fit an int64


def distance_buckets(max_distance: int) -> np.ndarray:
    """Log-spaced bucket upper bounds 1, 2, 4, ..., up to the first power of two >= max_distance.  # (K,)"""
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int >= 1; got {max_distance!r}")
    if not 1 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"max_distance must be in [1, 2**62] (the largest distance in steps; its bucket edge is an "
                         f"int64); got {max_distance}")
    # integer arithmetic: float64 log2 rounds 2**k + 1 down to k for k >= 49 (a last edge below max_distance)
    return 2 ** np.arange((int(max_distance) - 1).bit_length() + 1, dtype=np.int64)


def run_distance_buckets(venv, train_episodes: int, eval_repeats: int) -> np.ndarray:
    """A run's distance buckets (`distance_buckets`): up to the largest distance its env reports within
    `train_episodes` training episodes per lane and an evaluation of `eval_repeats` x `eval_episodes` episodes in a
    row after them (ContinualShift's distances reach back across episodes, so they grow with the run).  # (K,)"""
    return distance_buckets(int(venv.distance_bound(int(train_episodes), int(venv.eval_episodes) * int(eval_repeats))))


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
