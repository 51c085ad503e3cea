"""LongDependency-v0: associative recall at controlled distances, optionally across episodes."""

from __future__ import annotations

from collections import deque

import numpy as np

from envs.options import check_int, check_int_tuple, check_vocab
from envs.stream import (
    BOS,
    EOS,
    Episodes,
    StreamSource,
    fill_uniform_tokens,
    lane_uniforms,
    place_patterns,
    scale,
    smallest_ranks,
    split_columns,
)
from envs.token_env import TokenStreamEnv, TokenStreamVectorEnv

DEFAULT_DISTANCES = tuple(2**i for i in range(11))  # 1, 2, 4, ..., 1024: log-spaced
ROUNDS = 8  # proposal rounds of place_patterns before its (rare) one-by-one fallback
MAX_SIZE = 1_000_000


class _Stream:
    """State of one stream (train or eval): episodes generated and the pairs waiting for a later query."""

    def __init__(self):
        self.episode = 0
        self.carry: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()  # (keys, values, value pos) (B, C)


class LongDependencySource(StreamSource):
    env_id = "LongDependency-v0"

    def __init__(self, vocab_size: int = 256, distances=DEFAULT_DISTANCES, queries_per_episode: int = 16,
                 episode_length: int = 1280, cross_episode_queries: int = 0, cross_episode_gap: int = 1):
        self.vocab_size = V = check_int("vocab_size", vocab_size, 6, MAX_SIZE)
        self.distances = np.array(check_int_tuple("distances", distances, 1, MAX_SIZE), dtype=np.int64)
        self.queries = Q = check_int("queries_per_episode", queries_per_episode, 1, 10_000)
        self.cross = C = check_int("cross_episode_queries", cross_episode_queries, 0, 10_000)
        self.gap = check_int("cross_episode_gap", cross_episode_gap, 1, 1000)
        self.groups = self.gap + 1 if C else 1  # keys rotate through groups so a carried key is never reshown
        check_vocab("vocab_size", V, 2 + 4 * self.groups * (Q + C),
                    f"{Q + C} distinct keys per episode in {self.groups} key group(s)")
        need = int(self.distances[-1]) + 3 + 9 * (Q + C)  # guarantees place_patterns always finds room
        L = check_int("episode_length", episode_length, 2, MAX_SIZE)
        if need > MAX_SIZE:  # no episode_length can hold them: naming one (above its limit) misled
            raise ValueError(f"distances up to {int(self.distances[-1])} with {Q} + {C} queries need episodes of "
                             f"{need} steps, above episode_length's limit {MAX_SIZE}; use smaller distances")
        if L < need:
            raise ValueError(f"episode_length={L} is too short for distances up to {int(self.distances[-1])} "
                             f"with {Q} + {C} queries: needs at least {need}")
        self.episode_length = L
        self.n = n = (V - 2) // 4  # keys, query tokens and values: n each; noise: the rest
        self.group_size = n // self.groups
        self.key0, self.query0, self.value0, self.noise0 = 2, 2 + n, 2 + 2 * n, 2 + 3 * n
        self.eval_episodes = self.gap + 1 if C else 1
        self.max_distance = int(self.distances[-1]) if not C else max(int(self.distances[-1]), (self.gap + 1) * L)
        self.special_tokens = {"BOS": BOS, "EOS": EOS}
        self.restart()

    def inert_options(self) -> dict[str, str]:
        return {"cross_episode_gap": "with cross_episode_queries=0 (it is how far back those queries ask)"} \
            if not self.cross else {}

    def restart(self) -> None:
        self._streams = {"train": _Stream(), "eval": _Stream()}

    def start_evaluation(self) -> None:
        stream = self._streams["eval"]  # on to the next multiple: an evaluation starts there, its carry cleared
        stream.episode += -stream.episode % self.eval_episodes

    def content_name(self, token: int) -> str:
        for prefix, start in (("k", self.key0), ("q", self.query0), ("v", self.value0)):
            if start <= token < start + self.n:
                return f"{prefix}{token - start}"
        return "."

    def generate(self, rngs, phase: str, task_id: int) -> Episodes:
        stream = self._streams[phase]
        if phase == "eval" and stream.episode % self.eval_episodes == 0:
            stream.carry.clear()  # every complete evaluation starts afresh
        B, L, Q, C, R = len(rngs), self.episode_length, self.queries, self.cross, ROUNDS
        sizes = {"noise": L + 1, "dist": Q, "keys": self.group_size, "values": Q + C,
                 "q_rounds": Q * R, "q_fallback": Q, "c_rounds": C * R, "c_fallback": C,
                 "p_rounds": C * R, "p_fallback": C}
        n_u = sum(sizes.values())
        u = split_columns(lane_uniforms(rngs, n_u, self.buffer("uniforms", (B, n_u), np.float64)), sizes)
        obs, target, task, distance = self.new_arrays(B)
        fill_uniform_tokens(obs[:, 1:L], u["noise"][:, 1:L], self.noise0, self.vocab_size - self.noise0)
        occupied = self.buffer("occupied", (B, L + 1), bool)
        occupied.fill(False)
        occupied[:, [0, L]] = True
        lane = np.arange(B)[:, None]

        group = stream.episode % self.groups
        keys = self.key0 + group * self.group_size + smallest_ranks(u["keys"], Q + C)  # (B, Q+C) distinct
        values = self.value0 + scale(u["values"], self.n)  # (B, Q+C)

        # in-episode queries: key at t-d-1, value at t-d, query token at t
        d = self.distances[scale(u["dist"], len(self.distances))]  # (B, Q)
        offsets = np.stack([np.zeros_like(d), -d, -d - 1], axis=2)  # (B, Q, 3)
        t = place_patterns(occupied, offsets, d + 2, L, u["q_rounds"].reshape(B, Q, R), u["q_fallback"])
        obs[lane, t - d - 1] = keys[:, :Q]
        obs[lane, t - d] = values[:, :Q]
        obs[lane, t] = keys[:, :Q] + self.n
        target[lane, t] = values[:, :Q]
        distance[lane, t] = d

        if C:
            if len(stream.carry) == self.gap:  # pairs shown `gap` episodes ago are queried now
                old_keys, old_values, old_pos = stream.carry.popleft()
                t = place_patterns(occupied, np.zeros((B, C, 1), dtype=np.int64), np.ones((B, C), np.int64), L,
                                   u["c_rounds"].reshape(B, C, R), u["c_fallback"])
                obs[lane, t] = old_keys + self.n
                target[lane, t] = old_values
                distance[lane, t] = self.gap * L + t - old_pos
            pair = np.broadcast_to(np.array([0, 1]), (B, C, 2))
            p = place_patterns(occupied, pair, np.ones((B, C), np.int64), L - 1,
                               u["p_rounds"].reshape(B, C, R), u["p_fallback"])
            obs[lane, p], obs[lane, p + 1] = keys[:, Q:], values[:, Q:]
            stream.carry.append((keys[:, Q:].copy(), values[:, Q:].copy(), p + 1))
        stream.episode += 1
        return Episodes(obs, target, task, distance, phase, True, -1)


class LongDependencyEnv(TokenStreamEnv):
    """Associative recall: remember a key's value over a chosen distance, inside or across episodes.

    ## Description
    Each episode is a noise stream with embedded key/value pairs and queries. A pair is two tokens, a key
    `k_i` and then its value `v_j`; a query is the token `q_i` of a key shown earlier, and the correct action
    at the query step is that key's value. A query's distance (steps from the value to the query) is drawn
    uniformly from `distances` (default 1, 2, 4, ..., 1024). Keys are distinct within an episode; value tokens
    appear only inside pairs and noise comes from its own token range, so a model that sees only the last w
    observations cannot do better than chance (1 / number of values) on queries at distance > w. With
    `cross_episode_queries = C > 0`, every episode also shows C extra pairs that are queried `cross_episode_gap`
    episodes later (their distance counts steps across episodes); keys rotate through gap + 1 groups so that a
    carried key is never shown again before its query. The stream never depends on the actions.

    ## Tokens (vocab_size V, n = (V - 2) // 4)
    | ids | meaning |
    |-----|---------|
    | 0, 1 | BOS (reset observation), EOS (terminal observation) |
    | [2, 2+n) | keys k_i |
    | [2+n, 2+2n) | queries q_i (query of key k_i) |
    | [2+2n, 2+3n) | values v_j: the answers |
    | [2+3n, V) | noise |

    ## Action and observation spaces
    `Discrete(V)` both. Reward 1.0 for the correct value at a query step, 0.0 otherwise.

    ## Episode end
    Terminates after `episode_length` steps; no truncation.

    ## Arguments
    | option | default | meaning |
    |--------|---------|---------|
    | vocab_size | 256 | V; needs 2 + 4 (gap+1 if C else 1)(Q + C) |
    | distances | (1, 2, 4, ..., 1024) | distances a query draws from (uniformly) |
    | queries_per_episode | 16 | Q in-episode queries |
    | episode_length | 1280 | L steps; at least max(distances) + 3 + 9 (Q + C) |
    | cross_episode_queries | 0 | C queries per episode whose pair was shown in an earlier episode |
    | cross_episode_gap | 1 | how many episodes earlier (with C > 0) |

    `reset(options={"phase": "eval", "task_id": 0})` draws from an independent eval stream (its own carried
    pairs); `eval_episodes` = gap + 1 with cross-episode queries (a complete evaluation), else 1.
    A seeded `reset(seed=...)` restarts the stream (no carried pairs): seed once, then `reset()`.

    ## Version history
    * v0: initial version. (2026-11-30: eval episodes draw from their own generator per lane; before, each one
      advanced the training stream, so training episodes depended on the eval schedule.)
    """

    source_cls = LongDependencySource


class LongDependencyVectorEnv(TokenStreamVectorEnv):
    __doc__ = LongDependencyEnv.__doc__
    source_cls = LongDependencySource
