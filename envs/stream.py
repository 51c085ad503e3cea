"""The shared batched generator: what every env's source produces and the numpy helpers they share.

A *source* generates whole episodes for B lanes at once (lane-major arrays of shape (B, L + 1)); the scalar env
is the B = 1 case and the vector env the B = num_envs case, so both step by indexing the same arrays.

Randomness: every lane has its own `np.random.Generator` and draws a block of uniforms from it per episode
(`lane_uniforms`); all further work is batched numpy that treats lanes independently. Hence lane i of a vector
env seeded s produces exactly the stream of a scalar env seeded s + i, whatever the number of lanes.

Eval episodes (`reset(options={"phase": "eval", ...})`) draw from a second generator per lane (`eval_stream`),
made from the training one at each seeding: the training stream is the same however often the agent is evaluated.

Stream positions: an episode has L = `episode_length` steps. Observation 0 comes from `reset`, observations
1..L from the L calls to `step`; observation L (EOS, unscored) arrives with `terminated=True` and is never
acted upon. "Steps across episodes" count the L acted-upon observations 0..L-1 of each episode.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from envs.options import parse_reset_options

BOS, EOS = 0, 1  # every env reserves these two ids first; env-specific structure tokens follow


@dataclass
class Episodes:
    """One episode for each of B lanes; the per-step arrays are (B, L + 1), index t = observation t."""

    obs: np.ndarray  # (B, L+1) int64 tokens
    target: np.ndarray  # (B, L+1) int64: the correct action at step t, -1 where unscored
    task_id: np.ndarray  # (B, L+1) int64
    distance: np.ndarray  # (B, L+1) int64: obs[t - distance] == target[t] (stream positions), -1 n/a
    phase: str  # train / eval / write / recall (the same for every step and lane of the episode)
    memory_writes: bool  # may the agent write memory during this episode
    delay: int  # NeedleRecall recall episodes: episodes since the facts were shown; -1 otherwise


class StreamSource(abc.ABC):
    """Base of the three sources: options, vocabulary, stream state and `next_episode`.

    Subclasses set `vocab_size`, `num_tasks`, `episode_length`, `eval_episodes`, `max_distance`,
    `special_tokens` in `__init__`, and implement `restart` and `generate`.
    """

    env_id: str  # the registered id, for messages
    vocab_size: int
    num_tasks: int = 1
    episode_length: int
    eval_episodes: int = 1
    max_distance: int
    special_tokens: dict[str, int]

    def inert_options(self) -> dict[str, str]:
        """The options that change nothing under this source's others, each with the phrase that says why (agents.run
        names those given on its command line in its `note:` line). None by default."""
        return {}

    def start_evaluation(self) -> None:
        """Make the next eval reset begin a complete evaluation (`eval_episodes` eval resets in a row): where the eval
        stream stands inside one, the rest of it is skipped. The trainer calls it as each evaluation starts: a no-op
        in a run, whose evaluations are whole; after a re-evaluation replayed a run's resets under another `delay` or
        cross-episode gap it started mid-cycle (recalls of facts never written). Nothing to do for a source whose
        evaluations are one episode."""
        return None

    @abc.abstractmethod
    def restart(self) -> None:
        """Forget the stream state (schedule position, carried pairs or facts): called on a seeded reset."""

    @abc.abstractmethod
    def generate(self, rngs: list[np.random.Generator], phase: str, task_id: int) -> Episodes:
        """The next episode of the train stream (phase 'train') or of the eval stream of `task_id`."""

    def next_episode(self, rngs: list[np.random.Generator], options) -> Episodes:
        phase, task_id = parse_reset_options(options, self.num_tasks)
        return self.generate(rngs, phase, task_id)

    def distance_bound(self, train_episodes: int, eval_in_a_row: int) -> int:
        """The largest distance a lane reports in its first `train_episodes` training episodes and `eval_in_a_row`
        consecutive eval episodes after them: `max_distance`, unless distances grow with the stream."""
        return self.max_distance

    def token_name(self, token: int) -> str:
        """A short name for `render`: structure tokens by name, content tokens by their role."""
        for name, tid in self.special_tokens.items():
            if tid == token:
                return name
        return self.content_name(token)

    def content_name(self, token: int) -> str:
        return str(token)

    def buffer(self, name: str, shape: tuple[int, ...], dtype=np.int64) -> np.ndarray:
        """A scratch array kept between episodes (fresh big allocations cost more than the work on them).

        The episode arrays handed out by `generate` live in these buffers: they stay valid until the next
        `generate` call, which overwrites them (both envs are done with an episode when they ask for the next).
        """
        buffers = self.__dict__.setdefault("_buffers", {})
        buf = buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = buffers[name] = np.empty(shape, dtype=dtype)
        return buf

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_buffers", None)  # scratch only; the envs pickle the episode they are playing themselves
        return state

    def new_arrays(self, num_lanes: int, fill_task: int = 0) -> tuple[np.ndarray, ...]:
        """(obs, target, task_id, distance) for B lanes: BOS first, EOS last, nothing scored, task fill_task.

        obs[:, 1:L] is left for the caller to fill completely.
        """
        shape = (num_lanes, self.episode_length + 1)
        obs = self.buffer("obs", shape)
        obs[:, 0], obs[:, -1] = BOS, EOS
        target = self.buffer("target", shape)
        target.fill(-1)
        task = self.buffer("task", shape)
        task.fill(fill_task)
        distance = self.buffer("distance", shape)
        distance.fill(-1)
        return obs, target, task, distance


def eval_stream(rng: np.random.Generator) -> np.random.Generator:
    """The generator of a lane's eval episodes, derived from its training generator when that is seeded: the
    bit generator jumped (phi - 1) x 2^128 (about 1.2 x 2^127) draws ahead (PCG64, Gymnasium's), so the two
    streams never overlap, and the training generator is left as it was. Eval episodes drawn from the training
    generator made every later training episode depend on how often the agent had been evaluated."""
    bits = rng.bit_generator
    if hasattr(bits, "jumped"):
        return np.random.Generator(bits.jumped())
    return rng.spawn(1)[0]  # generators without jumps (SFC64): a child seed sequence


def lane_uniforms(rngs: list[np.random.Generator], n: int, out: np.ndarray | None = None) -> np.ndarray:
    """(B, n) uniforms in [0, 1), row i from `rngs[i]` alone (written into `out` when given)."""
    if out is None:
        out = np.empty((len(rngs), n))
    for row, rng in zip(out, rngs, strict=True):
        rng.random(out=row)
    return out


def scale(u: np.ndarray, n) -> np.ndarray:
    """Uniforms -> integers in [0, n) (n an int or an array broadcasting against u)."""
    # float64 u < 1 times n <= 2^53 never rounds up to n; the clamp keeps [0, n) for any other u (float32, 1.0)
    return np.minimum((u * n).astype(np.int64), np.asarray(n) - 1)


def fill_uniform_tokens(out: np.ndarray, u: np.ndarray, low: int, count: int) -> None:
    """out[...] = tokens uniform in [low, low + count) from uniforms u (same shape), in place for big arrays.

    `u` is scratch: it is overwritten.
    """
    np.multiply(u, count, out=u)
    out[...] = u  # truncation = floor for u >= 0
    np.minimum(out, count - 1, out=out)
    out += low


def random_ranks(u: np.ndarray) -> np.ndarray:
    """(B, n) uniforms -> (B, n) a random permutation of 0..n-1 per lane."""
    return np.argsort(u, axis=1, kind="stable")


def smallest_ranks(u: np.ndarray, k: int) -> np.ndarray:
    """`random_ranks(u)[:, :k]` without sorting whole rows: (B, n) uniforms -> (B, k), each row's k smallest by
    partition, then ordered as the stable sort orders them (by value, then index). A full argsort grew with n:
    LongDependency at vocab_size=65,536 spent 0.44 s per 256-lane reset keeping 16 of 16,383 keys."""
    k = min(k, u.shape[1])
    if k == u.shape[1] or k == 0:
        return random_ranks(u)[:, :k]
    part = np.argpartition(u, k - 1, axis=1)[:, :k]  # (B, k): the k smallest, unordered
    picked = np.take_along_axis(u, part, axis=1)
    order = np.lexsort((part, picked), axis=1)  # by value, then index
    out = np.take_along_axis(part, order, axis=1)
    kth = picked.max(axis=1, keepdims=True)  # (B, 1)
    tied = (u == kth).sum(axis=1) > (picked == kth).sum(axis=1)  # the partition chose among equal k-th values,
    if tied.any():  # not by index as the stable sort does (uniforms almost never tie)
        out[tied] = random_ranks(u[tied])[:, :k]
    return out


def first_ranks(rng: np.random.Generator, rows: int, n: int, k: int, block_bytes: int = 1 << 26) -> np.ndarray:
    """`random_ranks(rng.random((rows, n)))[:, :k]`, the first k entries of `rows` random permutations of 0..n-1,
    without holding the (rows, n) uniforms: they are drawn in row blocks of about `block_bytes` (the same draws
    in the same order) and each row's k smallest are found by partition, then ordered as the stable sort orders
    them. (ContinualShift at 5,000 shared keys x 500,000 values asked for 18.5 GiB at once.)"""
    k = min(k, n)
    out = np.empty((rows, k), dtype=np.int64)
    per = max(1, block_bytes // (8 * max(n, 1)))
    for start in range(0, rows, per):
        u = rng.random((min(per, rows - start), n))  # (r, n)
        out[start:start + len(u)] = smallest_ranks(u, k)
    return out


def place_patterns(occupied: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: int,
                   u_rounds: np.ndarray, u_fallback: np.ndarray) -> np.ndarray:
    """Put J patterns per lane on free cells of a (B, N) grid without overlaps; returns anchors (B, J).

    Item j of lane b occupies cells anchor + offsets[b, j, :] (distinct offsets), its anchor drawn uniformly
    from [low[b, j], high). Rounds: every unplaced item proposes a random anchor (`u_rounds[..., r]`); proposals
    on free cells that no other proposal of the same lane touches are accepted. Items left after the rounds
    (rare) are placed one by one on a uniformly chosen free anchor (`u_fallback`). `occupied` is updated in place.
    Callers validate that free anchors always exist (episode length vs. items), so failing here is a bug.
    """
    num_lanes, num_cells = occupied.shape
    J = offsets.shape[1]
    anchors = np.full((num_lanes, J), -1, dtype=np.int64)
    lane = np.arange(num_lanes)[:, None, None]  # (B, 1, 1)
    span = high - low  # (B, J)
    flat_occupied = occupied.reshape(-1)  # a view: writes below land in `occupied`
    for r in range(u_rounds.shape[2]):
        todo = anchors < 0  # (B, J)
        if not todo.any():
            break
        proposal = low + scale(u_rounds[:, :, r], span)  # (B, J)
        cells = proposal[:, :, None] + offsets  # (B, J, P)
        flat = (lane * num_cells + cells)[todo]  # (n_todo, P) cell ids over all lanes
        ordered = np.sort(flat, axis=None)
        shared = ordered[1:][ordered[1:] == ordered[:-1]]  # cells that two proposals claim
        ok = ~(flat_occupied[flat].any(axis=1) | np.isin(flat, shared).any(axis=1))  # (n_todo,)
        rows, cols = np.nonzero(todo)
        anchors[rows[ok], cols[ok]] = proposal[rows[ok], cols[ok]]
        flat_occupied[flat[ok]] = True
    for b, j in zip(*np.nonzero(anchors < 0), strict=True):
        candidates = np.arange(low[b, j], high)
        free = np.ones(len(candidates), dtype=bool)
        for off in offsets[b, j]:
            free &= ~occupied[b, candidates + off]
        choices = candidates[free]
        if len(choices) == 0:
            raise RuntimeError("no free place for a pattern; the option validation should have prevented this")
        anchors[b, j] = choices[scale(u_fallback[b, j], len(choices))]
        occupied[b, anchors[b, j] + offsets[b, j]] = True
    return anchors


def split_columns(u: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Cut a (B, n) block of uniforms into named (B, size) column ranges (sizes must sum to n)."""
    parts, start = {}, 0
    for name, size in sizes.items():
        parts[name] = u[:, start:start + size]
        start += size
    return parts
