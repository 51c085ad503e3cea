"""ContinualShift-v0: a schedule of key -> value tasks with conflicting mappings and their own token statistics."""

from __future__ import annotations

import numpy as np

from envs.last_reveals import LastReveals
from envs.options import check_bool, check_choice, check_float, check_int, check_vocab, check_world_seed
from envs.stream import BOS, EOS, Episodes, StreamSource, first_ranks, lane_uniforms, random_ranks, scale, split_columns
from envs.token_env import TokenStreamEnv, TokenStreamVectorEnv

SHIFTS = ("abrupt", "gradual")
FILLER_TABLE = 4096  # a task's filler distribution is this many equally likely table entries
FILLER_ZIPF = 1.2  # exponent of each task's (permuted) Zipf law over the filler tokens


def blended_distance(pair: np.ndarray, K: int) -> np.ndarray:
    """pair (B, N): each trial's (key, value) as one code -> (B, N) steps back to the last trial with the same pair
    (3 x its trials back - 1), -1 where none. Only trials a multiple of K back show the same key slot, so each
    chain of trials r, r + K, r + 2K, ... is searched alone: a stable sort by pair puts each trial right after its
    latest earlier equal (a loop over every multiple of K took 12 s a reset at 10^5 trials, K = 1)."""
    B, N = pair.shape
    M = -(-N // K)  # trials per chain
    codes = np.pad(pair, ((0, 0), (0, M * K - N)), constant_values=-1)  # pads (-1) equal no trial
    chains = codes.reshape(B, M, K).transpose(0, 2, 1).reshape(B * K, M)  # row (b, r): trials r, r + K, ...
    by_pair = np.argsort(chains, axis=1, kind="stable")  # (B K, M): positions by pair, then by position
    ranked = np.take_along_axis(chains, by_pair, axis=1)
    repeat = ranked[:, 1:] == ranked[:, :-1]  # (B K, M - 1): same pair as the one sorted before it
    back = np.full(chains.shape, -1, dtype=np.int64)  # chain steps back, -1: first showing
    rows = np.nonzero(repeat)[0]
    back[rows, by_pair[:, 1:][repeat]] = by_pair[:, 1:][repeat] - by_pair[:, :-1][repeat]
    steps = np.where(back > 0, 3 * K * back - 1, -1)  # (B K, M)
    return steps.reshape(B, K, M).transpose(0, 2, 1).reshape(B, M * K)[:, :N]


class ContinualShiftSource(StreamSource):
    env_id = "ContinualShift-v0"

    def __init__(self, num_tasks: int = 5, episodes_per_task: int = 20, trials_per_episode: int = 100,
                 keys_per_task: int = 32, key_overlap: float = 1.0, shift: str = "abrupt",
                 shift_window: int | None = None, task_visible: bool = False, revisit: bool = False,
                 vocab_size: int = 256, world_seed: int = 0):
        self.num_tasks = T = check_int("num_tasks", num_tasks, 1, 256)
        self.episodes_per_task = check_int("episodes_per_task", episodes_per_task, 1, 1_000_000)
        self.trials = N = check_int("trials_per_episode", trials_per_episode, 1, 100_000)
        self.keys_per_task = K = check_int("keys_per_task", keys_per_task, 1, 100_000)
        key_overlap = check_float("key_overlap", key_overlap, 0.0, 1.0)
        self.shared = S = int(round(key_overlap * K))  # keys common to every task (slots 0..S-1)
        self.shift = check_choice("shift", shift, SHIFTS)
        if shift_window is None:
            shift_window = min(5, self.episodes_per_task)
        self.shift_window = check_int("shift_window", shift_window, 1)
        if self.shift_window > self.episodes_per_task:  # checked with abrupt too (unused there): a slip either way
            raise ValueError(f"shift_window must be at most episodes_per_task={self.episodes_per_task} (the blend "
                             f"takes the last episodes of a task), got {self.shift_window}")
        self.task_visible = check_bool("task_visible", task_visible)
        self.revisit = check_bool("revisit", revisit)
        self.vocab_size = V = check_int("vocab_size", vocab_size, 4, 1_000_000)
        world_seed = check_world_seed(world_seed)
        num_keys = S + T * (K - S)
        # values get half of the ids after the keys (fillers the other half); a shared key needs a different
        # value in every task, else two tasks can share a mapping and nothing conflicts
        min_values = max(2, T) if S else 2
        check_vocab("vocab_size", V, 2 + T + num_keys + 2 * min_values,
                    f"{T} tasks x {keys_per_task} keys with key_overlap={key_overlap} plus >= {min_values} values"
                    + (" (one per task for each shared key)" if S else "") + " and as many fillers")
        rest = V - 2 - T - num_keys
        self.task0, self.key0 = 2, 2 + T
        self.num_values, self.value0 = rest // 2, 2 + T + num_keys
        self.num_fillers, self.filler0 = rest - rest // 2, self.value0 + rest // 2
        self.episode_length = 1 + 3 * N  # BOS, then trials (context, key, value)
        self._trial_slot = np.arange(N) % K  # trial i shows the key in position i mod K of the episode's order
        self._reveals = LastReveals(self.episode_length, K)  # each lane's last reveal of every pair, across episodes
        self.special_tokens = {"BOS": BOS, "EOS": EOS, **{f"TASK{j}": self.task0 + j for j in range(T)}}
        self._build_world(np.random.default_rng(world_seed))
        self._build_schedule()
        self.max_distance = self.distance_bound(self.schedule_length, self.eval_episodes)
        self.restart()

    def inert_options(self) -> dict[str, str]:
        if self.num_tasks == 1:  # train_plan blends only where there is a next task
            why = "with num_tasks=1 (a gradual shift blends the next task in; one task has none)"
            return {"shift": why, "shift_window": why}
        return {"shift_window": "with shift=abrupt (it is how long a gradual shift blends)"} \
            if self.shift == "abrupt" else {}

    def _build_world(self, rng: np.random.Generator) -> None:
        """Keys, conflicting values and filler statistics of every task (fixed by world_seed, not by reset seeds)."""
        T, K, S = self.num_tasks, self.keys_per_task, self.shared
        slot = np.arange(K)
        own = self.key0 + S + np.arange(T)[:, None] * (K - S) + (slot - S)  # (T, K) task-specific keys
        self.keys = np.where(slot < S, self.key0 + slot, own)  # (T, K) key of task j in slot s
        values = rng.integers(0, self.num_values, size=(T, K))
        if S:  # a shared key gets a different value in every task (num_values >= T): mappings conflict
            values[:, :S] = first_ranks(rng, S, self.num_values, T).T
        self.values = self.value0 + values  # (T, K)
        rank_weight = 1.0 / np.arange(1, self.num_fillers + 1) ** FILLER_ZIPF
        cdf = np.cumsum(rank_weight) / rank_weight.sum()
        rank_of_entry = np.minimum(np.searchsorted(cdf, (np.arange(FILLER_TABLE) + 0.5) / FILLER_TABLE),
                                   self.num_fillers - 1)
        # (T, F'): each task favours other fillers (a permutation of the F fillers per task; the table's
        # F' <= FILLER_TABLE ranks need only its first F' entries)
        ranks = int(rank_of_entry.max()) + 1
        order = first_ranks(rng, T, self.num_fillers, ranks)
        # Two tasks whose fillers come out equally often cannot be told apart with the task hidden where they share
        # keys; a few fillers allow that (V=49: tasks 3 and 4 of world_seed 2), so such a task draws again. The
        # vocab check gives F >= T fillers with shared keys, and the F choices of the most frequent filler alone are
        # F different distributions. Worlds without such a pair, and without shared keys, are unchanged.
        if S:
            counts = np.bincount(rank_of_entry, minlength=ranks)  # (F',) table entries per rank
            seen, held = set(), counts > 0

            def distribution(row: np.ndarray) -> bytes:  # the (filler, count) pairs of the fillers it draws
                by_filler = np.argsort(row[held])
                return row[held][by_filler].tobytes() + counts[held][by_filler].tobytes()

            for j in range(T):
                while (drawn := distribution(order[j])) in seen:
                    order[j] = first_ranks(rng, 1, self.num_fillers, ranks)[0]
                seen.add(drawn)
        self.filler_table = self.filler0 + order[:, rank_of_entry]  # (T, FILLER_TABLE)

    def _build_schedule(self) -> None:
        """The schedule's blocks; each episode's task and blend come by arithmetic (`train_plan`), so the schedule
        takes O(blocks) memory (per-episode arrays took 24 bytes an episode: 12 GB at 256 tasks x 10^6 x 2)."""
        passes = 2 if self.revisit else 1
        self.schedule_length = passes * self.num_tasks * self.episodes_per_task  # training episodes
        # one task: its blocks run together into one (no switch, no blend), as a per-episode schedule shows it
        blocks = passes * self.num_tasks if self.num_tasks > 1 else 1
        self.block_starts = np.arange(blocks, dtype=np.int64) * self.episodes_per_task  # (K,)
        self.block_tasks = np.arange(blocks, dtype=np.int64) % self.num_tasks  # (K,)

    def task_of(self, e: int) -> int:
        """Task of training episode e (past the schedule's end the last task continues)."""
        return min(e, self.schedule_length - 1) // self.episodes_per_task % self.num_tasks

    def train_plan(self, e: int) -> tuple[int, int, float]:
        """Training episode e's task, the task blended into it and that task's share of the trials: for
        shift="gradual", within w episodes of the next switch the next task with share (w - episodes to go + 1) /
        (w + 1); else the episode's own task, share 0."""
        task = self.task_of(e)
        nxt = (e // self.episodes_per_task + 1) * self.episodes_per_task  # first episode of the next block
        w = self.shift_window
        if self.shift == "gradual" and self.num_tasks > 1 and nxt < self.schedule_length and nxt - e <= w:
            return task, self.task_of(nxt), (w - (nxt - e) + 1) / (w + 1)
        return task, task, 0.0

    def start_evaluation(self) -> None:
        """An evaluation starts from the training stream, as the trainer's memory copy does: a second evaluation with
        no training between them (`evaluate_all()` twice, one task) measured its distances from the first's reveals."""
        self._reveals.chain_task = None  # (eval episodes after this one, eval_repeats of one evaluation, chain on)

    def restart(self) -> None:
        self.episode_index = 0  # training episodes started since the last seeded reset
        self._reveals.restart()

    def distance_bound(self, train_episodes: int, eval_in_a_row: int) -> int:
        """A pair revealed in a lane's first episode is asked at most at the end of its last eval episode (capped at
        2^62 steps, which no run reaches: the buckets' last edge must fit an int64)."""
        return min(max((train_episodes + eval_in_a_row) * self.episode_length, 1), 2**62)

    @property
    def current_task(self) -> int:
        """Task of the most recent training episode (the first task before any)."""
        return self.task_of(max(self.episode_index - 1, 0))

    def content_name(self, token: int) -> str:
        if self.value0 <= token < self.filler0:
            return f"v{token - self.value0}"
        if token >= self.filler0:
            return f"f{token - self.filler0}"
        return f"k{token - self.key0}"

    def generate(self, rngs, phase: str, task_id: int) -> Episodes:
        if phase == "train":
            start = self.episode_index * self.episode_length  # the episode's position in each lane's stream
            task_a, task_b, share = self.train_plan(self.episode_index)  # past the end: the last task, unblended
            self.episode_index += 1
        else:
            start = self._reveals.eval_start(self.episode_index, task_id)
            task_a = task_b = task_id
            share = 0.0
        B, N, K, L = len(rngs), self.trials, self.keys_per_task, self.episode_length
        sizes = {"order": K, "blend": N, "filler": N}
        n_u = sum(sizes.values())
        u = split_columns(lane_uniforms(rngs, n_u, self.buffer("uniforms", (B, n_u), np.float64)), sizes)
        obs, target, task, distance = self.new_arrays(B, fill_task=task_a)

        slot = random_ranks(u["order"])[:, self._trial_slot]  # (B, N): one key order, repeated every K trials
        trial_task = np.where(u["blend"] < share, task_b, task_a)  # (B, N)
        key = self.keys[trial_task, slot]  # (B, N)
        value = self.values[trial_task, slot]  # (B, N)
        if self.task_visible:
            context = self.task0 + trial_task
        else:
            context = self.filler_table[trial_task, scale(u["filler"], FILLER_TABLE)]
        obs[:, 1:L] = np.stack([context, key, value], axis=2).reshape(B, 3 * N)
        target[:, 2:L:3] = value  # the key step is scored; its value is revealed on the next step
        task[:, 1:L] = np.repeat(trial_task, 3, axis=1)

        # distance: back to the last trial that revealed this value for this key (a multiple of K trials)
        if share == 0.0:  # one task: every key's previous trial, K trials back, revealed the same value
            distance[:, 2 + 3 * K:L:3] = 3 * K - 1
        else:
            distance[:, 2:L:3] = blended_distance(key * self.vocab_size + value, K)
        # the pairs not revealed before in this episode: back to their last reveal in the lane's stream
        one_task = task_a if share == 0.0 else None
        self._reveals.fill(distance[:, 2:L:3], start, trial_task, slot, phase, one_task)
        self._reveals.record(start, trial_task, slot, phase, one_task)
        return Episodes(obs, target, task, distance, phase, True, -1)


class ScheduleAttributes:
    """ContinualShift's schedule, on the scalar env's `unwrapped` and on the vector env."""

    _source: ContinualShiftSource

    @property
    def schedule(self) -> tuple[int, ...]:
        """Task id of every training episode, in order (the last task continues after the end): one entry per
        episode, built on each access; a long schedule is better read as `schedule_blocks` / `schedule_length`."""
        src = self._source
        return tuple(int(j) for j in np.repeat(src.block_tasks, np.diff(src.block_starts, append=src.schedule_length)))

    @property
    def schedule_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """The schedule's training blocks (runs of consecutive episodes on one task): (starts, tasks), both (K,)
        int64, as `agents.cl_metrics.schedule_blocks(schedule)` gives them."""
        return self._source.block_starts.copy(), self._source.block_tasks.copy()

    @property
    def schedule_length(self) -> int:
        """Training episodes in the schedule (= len(schedule))."""
        return self._source.schedule_length

    @property
    def episodes_per_task(self) -> int:
        return self._source.episodes_per_task

    def train_plan(self, e: int) -> tuple[int, int, float]:
        """Training episode e's (task, blended task, share) (`ContinualShiftSource.train_plan`)."""
        return self._source.train_plan(e)

    @property
    def episode_index(self) -> int:
        """Training episodes started since the last seeded reset (= schedule position of the next one)."""
        return self._source.episode_index

    @property
    def current_task(self) -> int:
        return self._source.current_task


class ContinualShiftEnv(ScheduleAttributes, TokenStreamEnv):
    """Continual learning under distribution shift: tasks with conflicting key -> value mappings, in sequence.

    ## Description
    Every task j has its own key -> value mapping and its own token statistics. An episode is a sequence of
    trials of three tokens: a context token, a key, the key's value. The key step is scored (the correct action
    is the value); the value is then revealed as the next observation. Within an episode the keys of the task
    come in one random order repeated every `keys_per_task` trials, so a key never re-appears within
    3 x keys_per_task steps (96 by default): a windowed model must hold the mapping in its weights, a memory
    agent can also recall the last reveal. With `key_overlap` = 1 (default) all tasks use the same keys with
    different values, so training on a later task overwrites the earlier mapping (forgetting) unless context
    disambiguates. The context token is the task token (`task_visible=True`) or a filler drawn from the task's
    own Zipf distribution over filler tokens (hidden identity, inferable from the statistics).
    The training schedule runs `num_tasks` blocks of `episodes_per_task` episodes (twice with `revisit`);
    `shift="gradual"` blends the next task into the last `shift_window` episodes of a block with a rising share
    (1/(w+1) ... w/(w+1)) per trial. Task mappings come from `world_seed`, not from the reset seed, so all lanes
    and seeds share one world. The stream never depends on the actions.

    ## Tokens (T tasks, V vocab_size)
    | ids | meaning |
    |-----|---------|
    | 0, 1 | BOS (reset observation), EOS (terminal observation) |
    | [2, 2+T) | TASK0 ... TASK{T-1} (context when task_visible) |
    | next S + T(K - S) | keys (S = round(key_overlap K) shared, the rest per task) |
    | next half of the rest | values: the answers |
    | the remaining ids | fillers (hidden-task context) |

    ## Action and observation spaces
    `Discrete(V)` both. Reward 1.0 for the correct value at a key step, 0.0 otherwise.

    ## Episode end
    Terminates after 1 + 3 trials_per_episode steps; no truncation.

    ## Arguments
    | option | default | meaning |
    |--------|---------|---------|
    | num_tasks | 5 | T |
    | episodes_per_task | 20 | training episodes per task block |
    | trials_per_episode | 100 | key/value trials per episode (301 steps) |
    | keys_per_task | 32 | K keys per task |
    | key_overlap | 1.0 | share of keys common to all tasks (0 = disjoint); S = round(key_overlap K), halves to even |
    | shift | "abrupt" | "abrupt" or "gradual" |
    | shift_window | None | blending episodes before a switch (gradual), <= episodes_per_task; None: min(5, that) |
    | task_visible | False | show TASK tokens as context instead of task-specific fillers |
    | revisit | False | run the task sequence twice |
    | vocab_size | 256 | V; shared keys need >= T values: V >= 2 + T + (number of keys) + 2 max(2, T) |
    | world_seed | 0 | seed of the tasks' mappings and statistics, in [0, 2^32) |

    `reset(options={"phase": "eval", "task_id": j})` gives a pure task-j episode without moving the schedule,
    from the eval stream (the training episodes do not depend on how many evals came between); `eval_episodes` = 1.
    `info["distance"]` counts the steps back to the last reveal of the key's answer in the lane's stream (L per
    episode, across episode boundaries): 3K - 1 after an episode's first K trials (in a blended episode of a gradual
    shift, only where the trial K back was of the same task: else further back, to the pair's last reveal, or -1);
    before, where the pair was shown in an earlier episode (a new key order per episode: sometimes fewer than 3K
    steps back), -1 where never. An eval episode continues the training stream: consecutive evals of one task are
    one chain after the training episodes so far (as the trainer evaluates, on a copy of its memory); a training
    episode or another task's eval starts a new chain. `max_distance` covers the schedule and one eval episode after
    it, `distance_bound(train_episodes, eval_in_a_row)` any run (the lanes keep 8 bytes per (task, key) pair of each
    task shown so far).
    Attributes: `schedule` (task per episode), `schedule_blocks` ((starts, tasks) of its blocks),
    `schedule_length` (its episodes), `episodes_per_task`, `episode_index`, `current_task`.
    A seeded `reset(seed=...)` restarts the stream at the schedule's first episode: seed once, then `reset()`.

    ## Version history
    * v0: initial version. (2026-11-30: eval episodes draw from their own generator per lane; before, each one
      advanced the training stream, so training episodes depended on the eval schedule. 2026-12-01: two tasks whose
      fillers came out equally often, which a small vocab_size allowed, draw again where tasks share keys: with the
      task hidden nothing told them apart. Other worlds are unchanged. Later that day: `info["distance"]` reaches
      back across episodes, where it was -1 for every pair shown in an earlier episode, and `max_distance` grew from
      3 x trials_per_episode to (schedule + 1) x L; observations, answers and rewards are unchanged.)
    """

    source_cls = ContinualShiftSource


class ContinualShiftVectorEnv(ScheduleAttributes, TokenStreamVectorEnv):
    __doc__ = ContinualShiftEnv.__doc__
    source_cls = ContinualShiftSource
