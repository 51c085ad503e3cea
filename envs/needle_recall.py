"""NeedleRecall-v0: facts hidden once in a haystack, recalled from a partial cue episodes later, without writes."""

from __future__ import annotations

import math

import numpy as np

from envs.haystack import MARKOV_LENGTH, markov_corpus, text_corpus
from envs.options import check_int, check_vocab, check_world_seed
from envs.stream import BOS, EOS, Episodes, StreamSource, lane_uniforms, random_ranks, scale
from envs.token_env import TokenStreamEnv, TokenStreamVectorEnv

FACT, RECALL = 2, 3
CONTENT0 = 4  # first content token: haystack symbols, cue and answer tokens


class _Cycle:
    """One stream's position in its write -> recall cycle and the facts it holds."""

    def __init__(self):
        self.position = 0  # 0..delay-1: write episodes, delay..2 delay-1: recall episodes
        self.facts: np.ndarray | None = None  # (B, delay x facts_per_episode) pool rows of this cycle
        self.answer_pos: dict[int, np.ndarray] = {}  # write episode -> (B, F, M) where its answers were shown


def _distinct_prefixes(rng: np.random.Generator, count: int, length: int, symbols: int) -> np.ndarray:
    """(count, length) rows of symbols, all rows different (redraws duplicates; callers ensure room)."""
    rows = rng.integers(0, symbols, size=(count, length))
    # a row as one integer where it fits: np.unique over rows (axis=0) was slow (with setdiff1d 54 s at 2 x 10^6 facts)
    place = np.array([symbols**i for i in range(length)], dtype=np.int64) if symbols**length < 1 << 62 else None
    while True:
        _, first = np.unique(rows if place is None else rows @ place, axis=0, return_index=True)
        later = np.ones(count, dtype=bool)
        later[first] = False  # rows equal to an earlier one (np.setdiff1d took 7 s a call at 2 x 10^6)
        duplicate = np.flatnonzero(later)
        if len(duplicate) == 0:
            return rows
        rows[duplicate] = rng.integers(0, symbols, size=(len(duplicate), length))


class NeedleRecallSource(StreamSource):
    env_id = "NeedleRecall-v0"

    def __init__(self, vocab_size: int = 128, facts_per_episode: int = 4, delay: int = 10,
                 haystack_length: int = 256, cue_length: int = 4, recall_cue_length: int = 2, answer_length: int = 2,
                 train_facts: int = 1024, fresh_facts: int = 256, haystack_path=None, world_seed: int = 0):
        self.vocab_size = V = check_int("vocab_size", vocab_size, CONTENT0 + 2, 1_000_000)
        self.facts_per_episode = F = check_int("facts_per_episode", facts_per_episode, 1, 10_000)
        self.delay = D = check_int("delay", delay, 1, 10_000)
        self.cue_length = K = check_int("cue_length", cue_length, 1, 64)
        self.recall_cue_length = P = check_int("recall_cue_length", recall_cue_length, 1, 64)
        if P > K:  # a cue_length below the default recall_cue_length was refused as "recall_cue_length in [1, 1]"
            raise ValueError(f"recall_cue_length={P} is longer than cue_length={K}: the recall shows a part of the "
                             f"cue; set recall_cue_length <= {K}")
        self.answer_length = M = check_int("answer_length", answer_length, 1, 64)
        pools = {}
        for name, value in (("train_facts", train_facts), ("fresh_facts", fresh_facts)):
            pools[name] = check_int(name, value, 1, 1_000_000)
            if pools[name] < D * F:
                raise ValueError(f"{name}={pools[name]} is too small: one cycle holds delay x facts_per_episode = "
                                 f"{D * F} distinct facts")
        H = check_int("haystack_length", haystack_length, 0, 1_000_000)
        self.block_write, self.block_recall = 1 + K + M, P + M  # FACT cue answer | RECALL cue[:P] answer[:-1]
        world_seed = check_world_seed(world_seed)
        symbols = V - CONTENT0
        count = pools["train_facts"] + pools["fresh_facts"]
        if symbols**P < 2 * count:  # every fact needs its own recall cue; keep them sparse for quick drawing
            need = math.ceil((2 * count) ** (1 / P))
            while need**P < 2 * count:
                need += 1
            while need > 2 and (need - 1) ** P >= 2 * count:
                need -= 1
            check_vocab("vocab_size", V, CONTENT0 + need,
                        f"{count} facts whose first recall_cue_length={P} cue tokens must all differ")
        self.episode_length = L = 1 + H + F * self.block_write
        self.haystack_lengths = (H, L - 1 - F * self.block_recall)  # write, recall episodes
        if haystack_path is None:
            self.corpus = markov_corpus(symbols, max(MARKOV_LENGTH, 4 * L), world_seed)
            self.symbol_names = self.haystack_sha256 = None
        else:
            self.corpus, self.symbol_names, self.haystack_sha256 = text_corpus(haystack_path, symbols)
            if len(self.corpus) < self.haystack_lengths[1]:
                n = len(self.corpus)
                raise ValueError(f"haystack_path={str(haystack_path)!r} has {n} character{'s' * (n != 1)}; "
                                 f"haystack_length={H} needs at least {self.haystack_lengths[1]}")
        rng = np.random.default_rng((world_seed, 1))
        cues = _distinct_prefixes(rng, count, P, symbols)
        rest = rng.integers(0, symbols, size=(count, K - P + M))
        facts = CONTENT0 + np.concatenate([cues, rest], axis=1)  # (count, K + M): cue tokens, answer tokens
        self.train_pool = facts[:pools["train_facts"]]
        self.fresh_pool = facts[pools["train_facts"]:]  # never shown in training episodes
        write = np.concatenate([np.full((count, 1), FACT), facts], axis=1)  # FACT cue answer
        recall = np.concatenate([np.full((count, 1), RECALL), facts[:, :P], facts[:, K:K + M - 1]], axis=1)
        self._blocks = {"train": (write[:pools["train_facts"]], recall[:pools["train_facts"]]),
                        "eval": (write[pools["train_facts"]:], recall[pools["train_facts"]:])}
        self.eval_episodes = 2 * D
        self.max_distance = (D + 1) * L
        self.special_tokens = {"BOS": BOS, "EOS": EOS, "FACT": FACT, "RECALL": RECALL}
        self.restart()

    def restart(self) -> None:
        self._cycles = {"train": _Cycle(), "eval": _Cycle()}

    def start_evaluation(self) -> None:
        if self._cycles["eval"].position:  # inside a cycle: its recalls would ask for facts no write showed
            self._cycles["eval"] = _Cycle()

    def content_name(self, token: int) -> str:
        if self.symbol_names is not None and token - CONTENT0 < len(self.symbol_names):
            return repr(self.symbol_names[token - CONTENT0])
        return f"c{token - CONTENT0}"

    def generate(self, rngs, phase: str, task_id: int) -> Episodes:
        cycle = self._cycles[phase]
        pool = self.train_pool if phase == "train" else self.fresh_pool
        B, D, F, L = len(rngs), self.delay, self.facts_per_episode, self.episode_length
        K, P, M = self.cue_length, self.recall_cue_length, self.answer_length
        c = cycle.position
        if c == 0:  # a new cycle: the distinct facts its write episodes will show, in random order
            picks = lane_uniforms(rngs, len(pool), self.buffer("picks", (B, len(pool)), np.float64))
            chosen = np.argpartition(picks, D * F - 1, axis=1)[:, :D * F]  # a uniform random subset ...
            order = np.argsort(np.take_along_axis(picks, chosen, axis=1), axis=1)  # ... in a uniform order
            cycle.facts = np.take_along_axis(chosen, order, axis=1)
            cycle.answer_pos = {}
        writing = c < D
        j = c if writing else c - D
        rows = cycle.facts[:, j * F:(j + 1) * F]  # (B, F) pool rows
        u = lane_uniforms(rngs, 2 * F + 1, self.buffer("uniforms", (B, 2 * F + 1), np.float64))
        if not writing:  # recall the episode's facts in a fresh order
            recall_order = random_ranks(u[:, F:2 * F])  # (B, F): recall block i asks for written fact order[i]
            rows = np.take_along_axis(rows, recall_order, axis=1)
        block = self._blocks[phase][0 if writing else 1][rows]  # (B, F, b)
        b = block.shape[2]
        hay = L - 1 - F * b
        # blocks go between haystack tokens: sorted insertion points never overlap (stars and bars)
        insert = np.sort(scale(u[:, :F], hay + 1), axis=1)  # (B, F)
        start = 1 + insert + np.arange(F) * b  # (B, F) first cell of each block
        cells = start[:, :, None] + np.arange(b)  # (B, F, b)
        obs, target, task, distance = self.new_arrays(B)
        is_hay = self.buffer("is_hay", (B, L + 1), bool)
        is_hay.fill(True)
        is_hay[:, [0, L]] = False
        lane = np.arange(B)[:, None, None]
        is_hay[lane, cells] = False
        obs[lane, cells] = block
        offset = scale(u[:, -1], len(self.corpus) - hay + 1)  # (B,) where each lane's haystack begins
        obs[is_hay] = (CONTENT0 + self.corpus[offset[:, None] + np.arange(hay)]).ravel()  # hay cells per lane

        cycle.position = (c + 1) % (2 * D)
        if writing:
            cycle.answer_pos[j] = start[:, :, None] + 1 + K + np.arange(M)  # (B, F, M)
            return Episodes(obs, target, task, distance, "write", True, -1)
        shown = np.take_along_axis(cycle.answer_pos.pop(j), recall_order[:, :, None], axis=1)  # (B, F, M)
        scored = start[:, :, None] + P + np.arange(M)  # (B, F, M): last cue token, then revealed answers
        target[lane, scored] = pool[rows][:, :, K:]
        distance[lane, scored] = D * L + scored - shown
        return Episodes(obs, target, task, distance, "recall", False, D)


class FactPoolAttributes:
    """NeedleRecall's fact pools and haystack digest, on the scalar env's `unwrapped` and on the vector env."""

    _source: NeedleRecallSource

    @property
    def fact_pools(self) -> dict[str, np.ndarray]:
        """{"train": (n_train, K+M), "fresh": (n_fresh, K+M)} fact tokens: cue tokens, then answer tokens."""
        return {"train": self._source.train_pool.copy(), "fresh": self._source.fresh_pool.copy()}

    @property
    def haystack_sha256(self) -> str | None:
        """Hex sha256 of the haystack text in use (`haystack_path`'s file as read), None for the Markov text."""
        return self._source.haystack_sha256


class NeedleRecallEnv(FactPoolAttributes, TokenStreamEnv):
    """Needle-in-a-haystack recall across episodes, with memory writes forbidden while recalling.

    ## Description
    Facts are (cue tokens, answer tokens). A *write* episode hides `facts_per_episode` facts in a haystack, each
    once, as `FACT c_1 .. c_K a_1 .. a_M`. The stream runs in cycles of 2 x `delay` episodes: `delay` write
    episodes, then `delay` *recall* episodes; recall episode i asks for the facts of write episode i, so every
    recall comes exactly `delay` episodes after its fact was shown. A recall block is `RECALL c_1 .. c_P`
    followed by the answer: the step of c_P is scored with target a_1, then a_1 is revealed and scored with
    target a_2, and so on. `memory_writes` is False on every step of a recall episode, and `delay` is reported
    in its `info`. The haystack is a Markov "text" (default) or a user text file (`haystack_path`,
    character-level, characters numbered by frequency). Training episodes use the `train` fact pool; eval
    episodes (`reset(options={"phase": "eval", "task_id": 0})`) form their own cycle over the `fresh` pool,
    never shown in training, and `eval_episodes` = 2 x delay consecutive eval resets make one full cycle.
    Facts and the Markov source come from `world_seed`. The stream never depends on the actions.

    ## Tokens (vocab_size V)
    | ids | meaning |
    |-----|---------|
    | 0, 1 | BOS (reset observation), EOS (terminal observation) |
    | 2, 3 | FACT, RECALL |
    | [4, V) | content: haystack symbols, cue and answer tokens |

    ## Action and observation spaces
    `Discrete(V)` both. Reward 1.0 for a correct answer token at a scored recall step, 0.0 otherwise.

    ## Episode end
    Terminates after 1 + haystack_length + facts_per_episode (1 + cue_length + answer_length) steps (write and
    recall episodes alike; recall episodes fill the shorter blocks with more haystack); no truncation.

    ## Arguments
    | option | default | meaning |
    |--------|---------|---------|
    | vocab_size | 128 | V; >= 4 + the least n with n^P >= 2 x all facts (recall cues differ; 55 at the defaults) |
    | facts_per_episode | 4 | F facts per write episode (facts held at once: delay x F) |
    | delay | 10 | episodes from showing a fact to recalling it |
    | haystack_length | 256 | haystack tokens of a write episode |
    | cue_length | 4 | K |
    | recall_cue_length | 2 | P cue tokens shown at recall (the partial cue; P = K: the whole cue, a control) |
    | answer_length | 2 | M |
    | train_facts / fresh_facts | 1024 / 256 | pool sizes (each at least delay x F) |
    | haystack_path | None | UTF-8 text file for the haystack |
    | world_seed | 0 | seed of the facts and the Markov source, in [0, 2^32) |

    Attribute `fact_pools`: {"train": ..., "fresh": ...} arrays of fact tokens (cue, then answer).
    Attribute `haystack_sha256`: hex sha256 of the haystack text the env read from `haystack_path` (UTF-8, newlines
    as Python's text mode reads them), None for the Markov text. A run's checkpoint records it: resuming (or
    re-evaluating) a run whose haystack file now holds other text is refused.
    A seeded `reset(seed=...)` restarts the write/recall cycle at a write episode: seed once, then `reset()`.

    ## Version history
    * v0: initial version. (2026-11-30: eval episodes draw from their own generator per lane; before, each one
      advanced the training stream, so training episodes depended on the eval schedule.) (2026-12-01: attribute
      `haystack_sha256`.)
    """

    source_cls = NeedleRecallSource


class NeedleRecallVectorEnv(FactPoolAttributes, TokenStreamVectorEnv):
    __doc__ = NeedleRecallEnv.__doc__
    source_cls = NeedleRecallSource
