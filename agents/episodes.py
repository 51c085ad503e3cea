"""Run one synchronous episode of B lanes: one chunk forward per chunk acts and learns (or acts step by step first).

Every lane of a memstream vector env (`make_vector_env`) has the same episode length, so all lanes start and end
together. Per chunk of C steps, train.acting decides who answers the scored steps:
  chunk (auto's choice on open-loop envs): the env shows the chunk's observations ahead (`venv.upcoming`), and
            `model(obs_chunk, s0, writes_chunk, meta, read_at=scored steps)` runs first; its logits there give
            the actions (greedy, or sampled in reinforce training), the env takes them step by step and pays the
            rewards, and the same forward's graph learns. They are the logits of step acting: reads never see the
            call's own writes and the model is causal.
  step:     under no_grad with the cached incremental forward and writes off, the model is run only when a
            step is scored (in some lane): it reads the observations gathered since its last call as one block
            (the same logits as one token at a time) and answers with its real action. Unscored steps get
            action 0 without a forward: the env ignores those actions (README "What every env has in common").
            Memory is read at the block's last step only (`read_at`). Then the chunk forward runs on what the env
            showed (`learn_played`). `agents.agent.Agent` runs the same two (`policy`, `learn_played`) for a loop
            that pushes steps instead of this one's pull.
The chunk forward starts from the chunk's start state, with gradients when training (TBPTT: the state is detached
between chunks); it also applies the chunk's memory writes (block-recurrent memory), so acting and learning see the
same memory. Memory reads and logits are computed at the steps scored in some lane only, which is all the loss and
the actions use; a chunk with no scored step runs without autograd unless the model's loss has terms of its own
(`learns_without_targets`).
Eval runs the same loop with `learner=None` (no gradients, no weight update); with step acting its chunk call reads
nothing: it only applies the writes, the accuracy comes from the actions taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the memstream ids; Gymnasium 1.x has no plugin auto-registration)
from agents.cl_metrics import AccuracyByKey
from agents.config import ACTING, ConfigError

# what `_play` records of each step's info, column -> info key ("tokens" is the observation itself)
INFO_COLUMNS = {"targets": "target", "scored": "scored", "writes": "memory_writes", "task": "task_id",
                "distance": "distance", "delay": "delay"}
# per-chunk memory metrics that are counts, not rates: an episode reports its last value (the count at its end, the
# step TensorBoard plots it at), not the mean over its chunks
GAUGES = frozenset({"store_entries"})


def make_vector_env(env_id: str, lanes: int, kwargs: dict):
    """The native vectorised env of a memstream id; bad ids and options become one ConfigError line."""
    if env_id not in gym.registry:
        known = ", ".join(sorted(k for k, spec in gym.registry.items()
                                 if str(spec.entry_point).startswith("envs.")))
        raise ConfigError(f"unknown env id {env_id!r}; choose one of: {known}")
    try:
        return gym.make_vec(env_id, num_envs=lanes, vectorization_mode="vector_entry_point", **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env.kwargs for {env_id}: {exc}") from None


@dataclass
class Chunk:
    """What one chunk of the stream showed and what the agent did, all (B, C)."""

    tokens: torch.Tensor  # (B, C) long: observations acted upon (C: steps, or the columns picked by `columns`)
    targets: torch.Tensor  # (B, C) long, -1 where unscored
    scored: torch.Tensor  # (B, C) bool
    writes: torch.Tensor  # (B, C) bool: env's memory_writes
    actions: torch.Tensor  # (B, C) long: what the agent sent to the env
    rewards: torch.Tensor  # (B, C) float: what the env paid for them
    meta: dict[str, np.ndarray]  # (B, C) int arrays: episode, position, task

    def columns(self, at: torch.Tensor) -> Chunk:
        """The chunk at steps `at` (C',) only: what the learner sees next to logits read there."""
        cols = at.cpu().numpy()
        return Chunk(*(getattr(self, f)[:, at] for f in ("tokens", "targets", "scored", "writes", "actions",
                                                          "rewards")),
                     meta={k: v[:, cols] for k, v in self.meta.items()})


@dataclass
class EpisodeStats:
    steps: int = 0  # env steps per lane
    scored: int = 0  # scored steps over all lanes
    correct: int = 0
    loss_sum: float = 0.0
    losses: int = 0  # chunks that had a loss (a scored step or a regulariser); `loss` averages over these
    updates: int = 0  # learning chunks, with a loss or not (update timing counts only the `losses` ones)
    memory_sums: dict[str, float] = field(default_factory=dict)  # the model's per-chunk memory metrics, summed
    memory_counts: dict[str, int] = field(default_factory=dict)  # chunks that reported each (reads: scored ones)
    # (GAUGES: the last value, with count 1)
    # where the model's time went, wall seconds (host clock: on CUDA, work still queued is counted where it waits):
    # "act" the acting calls, "learn" the chunk calls (training: the forward with its writes; evaluation: the
    # writes), "update" loss, backward and optimiser step of the chunks that had a loss; the env, the bookkeeping
    # and the learner's look at a chunk with nothing to learn from are the rest
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("act", "learn", "update"), 0.0))
    act_calls: int = 0
    chunks: int = 0

    @property
    def memory(self) -> dict[str, float]:
        """Per-chunk memory metrics averaged over the chunks that reported them (GAUGES: the last value)."""
        return {k: v / self.memory_counts[k] for k, v in self.memory_sums.items()}

    @property
    def milliseconds(self) -> dict[str, float | None]:
        """ms per acting call ("act_ms"), per chunk call ("chunk_forward_ms") and per update ("update_ms": the
        loss, backward and optimiser step of a chunk that had a loss); None where the episode had none."""
        def per(key: str, n: int) -> float | None:
            return 1e3 * self.seconds[key] / n if n else None
        return {"act_ms": per("act", self.act_calls), "chunk_forward_ms": per("learn", self.chunks),
                "update_ms": per("update", self.losses)}

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.losses if self.losses else None


# learner(chunk, logits, aux) -> loss value (float) after taking its optimiser step, None when the chunk had no
# loss term (no scored step, no regulariser)
Learner = Callable[[Chunk, torch.Tensor, dict], float]


def resolve_acting(acting: str, venv, dropout: float, reinforce: bool = False) -> str:
    """train.acting -> "step" or "chunk". auto: chunk when the env shows its stream ahead (`upcoming`: open loop,
    every memstream env) and the model has no dropout (supervised acting never sees dropout; the chunk forward
    trains with it), step otherwise. reinforce (train.mode=reinforce): chunk on an open-loop env whatever the
    dropout: one forward draws the actions and takes their gradient, under the same dropout masks (step acting
    acts without dropout, so its learning forward runs without it too: `EpisodeRunner._chunk`)."""
    if acting not in ACTING:
        raise ConfigError(f"train.acting={acting!r}: choose one of {', '.join(ACTING)}")
    ahead = callable(getattr(venv, "upcoming", None))
    if acting == "chunk" and not ahead:
        raise ConfigError(f"train.acting=chunk needs an open-loop env that shows its next observations "
                          f"(upcoming()); {type(venv).__name__} does not: use train.acting=step")
    if acting == "auto":
        return "chunk" if ahead and (dropout == 0 or reinforce) else "step"
    return acting


class EpisodeRunner:
    """Steps a native vector env with a model; owns the per-lane memory state between episodes.

    acting "step": the cached incremental forward acts at each scored step, then the chunk forward learns.
    acting "chunk" (open-loop envs): the chunk forward runs first, on the chunk's observations read ahead from the
    env (`upcoming`), and its logits at the scored steps give the actions, which then step the env. Those are
    the logits acting step by step would give (reads never see the call's own writes; the model is causal), so
    the actions are the same and the acting calls are gone."""

    def __init__(self, venv, model, device: torch.device, chunk: int, amp: bool = False, acting: str = "auto",
                 reinforce: bool = False):
        self.venv, self.model, self.device, self.chunk = venv, model, device, chunk
        self.amp = amp
        self.acting = resolve_acting(acting, venv, model.cfg.dropout if acting == "auto" else 0.0,
                                     reinforce)  # step | chunk
        self.num_lanes = venv.num_envs

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def run(self, state: dict, obs: np.ndarray, info: dict, episode: int,
            learner: Learner | None = None, sample: bool = False, on_aux=None,
            by_distance: AccuracyByKey | None = None, by_delay: AccuracyByKey | None = None,
            ) -> tuple[dict, EpisodeStats]:
        """Play the episode that `reset` just began (its first `obs`, `info`) to its end.

        Returns the state after the episode and its stats. `episode` is recorded with store entries; `sample`
        draws actions from the policy instead of taking the argmax.
        """
        stats = EpisodeStats()
        done = False
        while not done:
            state, done, obs, info = self._chunk(state, obs, info, episode, stats,
                                                 learner, sample, by_distance, by_delay, on_aux)
        return state, stats

    def _chunk(self, state, obs, info, episode, stats, learner, sample, by_distance, by_delay, on_aux):
        if self.acting == "chunk":
            ahead_obs, ahead = self.venv.upcoming(self.chunk)  # (B, n): the chunk acts on obs + all but the last

            def steps(now, later):  # this step's (B,) and the next ones' (B, n) -> the chunk's (B, n)
                return np.concatenate((np.asarray(now)[:, None], later[:, :-1]), 1)

            seen = steps(obs, ahead_obs)
            tokens = self._tensor(seen)  # (B, n)
            writes = self._tensor(steps(info["memory_writes"], ahead["memory_writes"]), torch.bool)
            at = self._tensor(steps(info["scored"], ahead["scored"]).any(0).nonzero()[0])  # (C',) scored in some lane
            meta = self._meta(episode, stats.steps, steps(info["task_id"], ahead["task_id"]))
            out = self._forward(tokens, state, writes, meta, at, learner, stats)  # (logits, state, aux)
            actions = np.zeros(tokens.shape, dtype=np.int64)  # unscored steps: 0 (the env ignores them)
            if len(at):
                actions[:, at.cpu().numpy()] = _choose(out[0].detach(), sample).cpu().numpy()
            arr, done, obs, info = self._play(obs, info, tokens.shape[1], lambda i, _: actions[:, i])
            if not np.array_equal(arr["tokens"], seen):
                raise RuntimeError(f"{type(self.venv).__name__}.upcoming() showed other observations than step() "
                                   "returned: the env is not open loop; use train.acting=step")
            chunk = self._to_chunk(arr, episode, stats.steps)
            return self._learned(chunk, at, out, arr, stats, learner, on_aux, by_distance, by_delay), done, obs, info
        arr, done, obs, info = self._play(obs, info, self.chunk, self.policy(state, sample, stats))
        return self.learn_played(state, arr, episode, stats, learner, sample, on_aux, by_distance,
                                 by_delay), done, obs, info

    def learn_played(self, state, arr: dict[str, np.ndarray], episode: int, stats: EpisodeStats,
                     learner: Learner | None = None, sample: bool = False, on_aux=None,
                     by_distance: AccuracyByKey | None = None, by_delay: AccuracyByKey | None = None) -> dict:
        """Step acting's chunk call: what the env showed and got while `policy` acted (`arr`, from `_play` or an
        `agents.agent.Agent`), run from the chunk's start `state`; it applies the chunk's memory writes, learns with
        `learner` and counts into `stats`. Returns the state after the chunk (detached)."""
        chunk = self._to_chunk(arr, episode, stats.steps)
        # the loss needs logits at scored steps only, an evaluation none (its accuracy comes from the actions)
        at = chunk.scored.any(0).nonzero().flatten() if learner is not None else self._tensor(np.zeros(0))
        # sampled actions (reinforce) came from the acting calls' policy, which has no dropout: the update's
        # log-probabilities must be that policy's, so its forward runs without dropout too (with it, the
        # gradient was taken for other policies than the one that drew the actions: off-policy, biased)
        out = self._forward(chunk.tokens, state, chunk.writes, chunk.meta, at, learner, stats, dropout=not sample)
        return self._learned(chunk, at, out, arr, stats, learner, on_aux, by_distance, by_delay)

    def _learned(self, chunk, at, out, arr, stats, learner, on_aux, by_distance, by_delay) -> dict:
        """After a chunk call `out` = (logits, new state, aux): the learner's step, the counts; the detached state."""
        logits, new_state, aux = out
        if learner is not None:
            t1 = time.perf_counter()
            loss = learner(chunk.columns(at), logits.float(), aux)
            self._wait()
            if loss is not None:  # a chunk with nothing to learn from does not pull the mean loss towards 0
                stats.loss_sum, stats.losses = stats.loss_sum + loss, stats.losses + 1
                # nor update_ms (per chunk with a loss) up: its time is not an update's
                stats.seconds["update"] += time.perf_counter() - t1
            stats.updates += 1
        if on_aux is not None:
            on_aux(aux)
        self._count(arr, aux, stats, by_distance, by_delay)
        return self.model.detach_state(new_state)

    def _wait(self) -> None:
        """Wait for the device's queued work before a part's time is read: CUDA runs asynchronously, and the chunk
        forward's kernels were otherwise timed in the update (its loss's first read waits for them)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _tensor(self, a, dtype=torch.long) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=self.device)

    def _meta(self, episode: int, start: int, task: np.ndarray) -> dict[str, np.ndarray]:
        """What store entries record: episode, position (steps since the episode began), task; all (B, C)."""
        B, C = task.shape
        pos = np.broadcast_to(np.arange(start, start + C), (B, C))
        return {"episode": np.full((B, C), episode, dtype=np.int64), "position": pos.astype(np.int64),
                "task": task.astype(np.int64)}

    def policy(self, state, sample: bool, stats: EpisodeStats):
        """Step acting: `act(i, cols)` runs the cached incremental forward (no_grad, writes off) when step i is
        scored in some lane, on the observations gathered since its last call as one block (the same logits as one
        token at a time), with memory read at the block's last step only; unscored steps get action 0."""
        s_act, fed = state, 0  # the acting state; steps of this chunk already fed to it

        def act(i: int, cols: dict) -> np.ndarray:
            nonlocal s_act, fed
            if not np.any(cols["scored"][i]):  # the env ignores actions at unscored steps
                return np.zeros(self.num_lanes, dtype=np.int64)
            t0 = time.perf_counter()
            # acting is never stochastic through dropout: eval mode
            self.model.eval()
            with torch.no_grad(), self.autocast():
                tok = self._tensor(np.stack(cols["tokens"][fed:i + 1], axis=1))  # (B, n): unfed + this step
                writes = torch.zeros(tok.shape, dtype=torch.bool, device=self.device)
                last = torch.tensor([tok.shape[1] - 1], device=self.device)  # only this step's answer is needed
                logits, s_act, _ = self.model(tok, s_act, writes, read_at=last)
                action = _choose(logits[:, -1], sample).cpu().numpy()  # (B,)
            fed = i + 1
            stats.seconds["act"] += time.perf_counter() - t0
            stats.act_calls += 1
            return action
        return act

    def _play(self, obs, info, steps: int, act) -> tuple[dict[str, np.ndarray], bool, np.ndarray, dict]:
        """Step the env up to `steps` times (fewer at the episode's end) with `act(i, cols)`'s actions; returns what
        each step showed and got, (B, C) arrays, and whether the episode ended, with the next obs and info."""
        cols: dict[str, list] = {k: [] for k in ("tokens", *INFO_COLUMNS, "actions", "rewards")}
        done = False
        while len(cols["tokens"]) < steps and not done:
            cols["tokens"].append(np.asarray(obs).copy())
            for k, key in INFO_COLUMNS.items():
                cols[k].append(np.asarray(info[key]).copy())
            action_np = act(len(cols["tokens"]) - 1, cols)
            cols["actions"].append(action_np)
            obs, reward, terminated, truncated, info = self.venv.step(action_np)
            cols["rewards"].append(np.asarray(reward, dtype=np.float32))
            done = bool(np.all(terminated | truncated))
            if not done and np.any(terminated | truncated):
                raise RuntimeError("memstream envs end all lanes together; this env did not")
        return {k: np.stack(v, axis=1) for k, v in cols.items()}, done, obs, info

    def _to_chunk(self, arr: dict[str, np.ndarray], episode: int, start: int) -> Chunk:
        t = self._tensor
        return Chunk(tokens=t(arr["tokens"]), targets=t(arr["targets"]), scored=t(arr["scored"], torch.bool),
                     writes=t(arr["writes"], torch.bool), actions=t(arr["actions"]),
                     rewards=t(arr["rewards"], torch.float32), meta=self._meta(episode, start, arr["task"]))

    def _forward(self, tokens, state, writes, meta, at, learner, stats, dropout: bool = True):
        """The chunk call from the chunk's start state, logits at steps `at`: with gradients when training and
        there is something to learn (TBPTT: the state is detached between chunks); it also applies the chunk's
        memory writes (block-recurrent memory). A chunk with no scored step runs without autograd unless the
        model's loss has terms of its own (`learns_without_targets`). Training mode (dropout) when training,
        unless `dropout` is False."""
        t0 = time.perf_counter()
        learns = learner is not None and (len(at) > 0 or self.model.learns_without_targets())
        self.model.train(learner is not None and dropout)
        with self.autocast(), torch.set_grad_enabled(learns):
            out = self.model(tokens, state, writes, meta, read_at=at)
        self._wait()
        stats.seconds["learn"] += time.perf_counter() - t0
        stats.chunks += 1
        return out

    def _count(self, arr, aux, stats, by_distance, by_delay) -> None:
        """The chunk's memory metrics and accuracy into the episode's stats."""
        for name, value in aux.get("metrics", {}).items():
            if isinstance(value, (int, float)):
                if name in GAUGES:  # a count: the latest value (sum of one, count of one)
                    stats.memory_sums[name], stats.memory_counts[name] = float(value), 1
                    continue
                stats.memory_sums[name] = stats.memory_sums.get(name, 0.0) + float(value)
                stats.memory_counts[name] = stats.memory_counts.get(name, 0) + 1
        correct = (arr["actions"] == arr["targets"]) & arr["scored"]
        stats.scored += int(arr["scored"].sum())
        stats.correct += int(correct.sum())
        stats.steps += correct.shape[1]
        if by_distance is not None:
            by_distance.update(arr["distance"][arr["scored"]], correct[arr["scored"]])
        if by_delay is not None:
            by_delay.update(arr["delay"][arr["scored"]], correct[arr["scored"]])


def _choose(logits: torch.Tensor, sample: bool) -> torch.Tensor:
    """Actions from logits (B, V) or a chunk's (B, C', V): drawn from the policy, or its argmax. A chunk's draws are
    made step by step, as step acting makes them, so both use the random stream alike and take the same actions."""
    logits = logits.float()
    if not sample:
        return logits.argmax(-1)
    if not bool(torch.isfinite(logits).all()):  # (the argmax takes NaN; the trainer's loss check then says so)
        raise FloatingPointError("non-finite logits (NaN or inf) reached the policy's sampling")  # not Categorical's
    if logits.dim() == 3:  # one (B, V) draw per step: one (B, C', V) draw gave other actions from the same policy
        return torch.stack([torch.distributions.Categorical(logits=logits[:, j]).sample()
                            for j in range(logits.shape[1])], dim=1)
    return torch.distributions.Categorical(logits=logits).sample()
