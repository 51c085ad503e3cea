"""Run one synchronous episode of B lanes: act step by step with the cached incremental forward, learn on chunks.

Every lane of a memstream vector env (`make_vector_env`) has the same episode length, so all lanes start and end
together.
Per chunk of C steps:
  1. act:   under no_grad with the cached incremental forward and writes off, the model is run only when a
            step is scored (in some lane): it reads the observations gathered since its last call as one block
            (the same logits as one token at a time) and answers with its real action (greedy, or sampled in
            reinforce training). Unscored steps get action 0 without a forward: the env ignores those actions
            (DESIGN.md section 4), and skipping them is most of the acting cost on sparse tasks. Memory is read
            at the block's last step only (`read_at`): the others only advance the state.
  2. learn: `model(obs_chunk, s0, writes_chunk, meta, read_at=scored steps)` from the chunk's start state, with
            gradients when training (TBPTT: the state is detached between chunks); this forward also applies the
            chunk's memory writes (block-recurrent memory), so acting and learning see the same memory. Memory
            reads and logits are computed at the steps scored in some lane only, which is all the loss uses
            (the same logits and gradients as a full call there); a chunk with no scored step runs without
            autograd unless the model's loss has terms of its own (`learns_without_targets`).
Eval runs the same loop with `learner=None` (no gradients, no weight update); its chunk call reads nothing: it
only applies the writes, the accuracy comes from the actions taken.
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
from agents.config import ConfigError

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


class EpisodeRunner:
    """Steps a native vector env with a model; owns the per-lane memory state between episodes."""

    def __init__(self, venv, model, device: torch.device, chunk: int, amp: bool = False):
        self.venv, self.model, self.device, self.chunk = venv, model, device, chunk
        self.amp = amp
        self.num_lanes = venv.num_envs
        self.lanes = np.arange(self.num_lanes)

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
        B, dev = self.num_lanes, self.device
        cols: dict[str, list] = {k: [] for k in ("tokens", "targets", "scored", "writes", "actions", "rewards",
                                                  "task", "distance", "delay")}
        s_act, done = state, False
        fed = 0  # steps of this chunk already fed to the acting model
        # acting is never stochastic through dropout: the mode the last call left (train after a learning chunk,
        # eval after an evaluation) decided it before; with dropout 0 the modes give the same logits
        self.model.eval()
        with torch.no_grad(), self.autocast():
            while len(cols["tokens"]) < self.chunk and not done:
                if np.any(info["scored"]):  # the policy is only needed where an answer is scored
                    block = np.stack(cols["tokens"][fed:] + [np.asarray(obs)], axis=1)  # (B, n): unfed + this step
                    t0 = time.perf_counter()
                    tok = torch.as_tensor(block, dtype=torch.long, device=dev)
                    writes = torch.zeros(tok.shape, dtype=torch.bool, device=dev)
                    last = torch.tensor([tok.shape[1] - 1], device=dev)  # only this step's answer is needed
                    logits, s_act, _ = self.model(tok, s_act, writes, read_at=last)
                    logits = logits[:, -1].float()  # (B, V)
                    fed = len(cols["tokens"]) + 1
                    if sample:
                        action = torch.distributions.Categorical(logits=logits).sample()
                    else:
                        action = logits.argmax(-1)
                    action_np = action.cpu().numpy()
                    stats.seconds["act"] += time.perf_counter() - t0
                    stats.act_calls += 1
                else:  # the env ignores actions at unscored steps
                    action_np = np.zeros(B, dtype=np.int64)
                for k, v in (("tokens", obs), ("targets", info["target"]), ("scored", info["scored"]),
                             ("writes", info["memory_writes"]), ("actions", action_np), ("task", info["task_id"]),
                             ("distance", info["distance"]), ("delay", info["delay"])):
                    cols[k].append(np.asarray(v).copy())
                obs, reward, terminated, truncated, info = self.venv.step(action_np)
                cols["rewards"].append(np.asarray(reward, dtype=np.float32))
                done = bool(np.all(terminated | truncated))
                if not done and np.any(terminated | truncated):
                    raise RuntimeError("memstream envs end all lanes together; this env did not")
        arr = {k: np.stack(v, axis=1) for k, v in cols.items()}  # (B, C)
        C = arr["tokens"].shape[1]
        pos = np.broadcast_to(np.arange(stats.steps, stats.steps + C), (B, C))
        chunk = Chunk(
            tokens=torch.as_tensor(arr["tokens"], dtype=torch.long, device=dev),
            targets=torch.as_tensor(arr["targets"], dtype=torch.long, device=dev),
            scored=torch.as_tensor(arr["scored"], dtype=torch.bool, device=dev),
            writes=torch.as_tensor(arr["writes"], dtype=torch.bool, device=dev),
            actions=torch.as_tensor(arr["actions"], dtype=torch.long, device=dev),
            rewards=torch.as_tensor(arr["rewards"], device=dev),
            meta={"episode": np.full((B, C), episode, dtype=np.int64), "position": pos.astype(np.int64),
                  "task": arr["task"].astype(np.int64)},
        )
        # learn (or, in eval, just apply the chunk's memory writes) from the chunk's start state; the loss needs
        # logits at scored steps only, an evaluation none (its accuracy comes from the actions taken)
        t0 = time.perf_counter()
        if learner is not None:
            self.model.train()
            at = chunk.scored.any(0).nonzero().flatten()  # (C',) steps scored in some lane
            # nothing scored and no loss of the model's own: no gradient, so no graph (sparse tasks' most chunks)
            learns = len(at) > 0 or self.model.learns_without_targets()
            with self.autocast(), torch.set_grad_enabled(learns):
                logits, new_state, aux = self.model(chunk.tokens, state, chunk.writes, chunk.meta, read_at=at)
            t1 = time.perf_counter()
            loss = learner(chunk.columns(at), logits.float(), aux)
            if loss is not None:  # a chunk with nothing to learn from does not pull the mean loss towards 0
                stats.loss_sum, stats.losses = stats.loss_sum + loss, stats.losses + 1
                # nor update_ms (per chunk with a loss) up: its time is not an update's
                stats.seconds["update"] += time.perf_counter() - t1
            stats.updates += 1
        else:
            self.model.eval()
            with torch.no_grad(), self.autocast():
                _, new_state, aux = self.model(chunk.tokens, state, chunk.writes, chunk.meta,
                                               read_at=torch.zeros(0, dtype=torch.long, device=dev))
            t1 = time.perf_counter()
        stats.seconds["learn"] += t1 - t0
        stats.chunks += 1
        if on_aux is not None:
            on_aux(aux)
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
        stats.steps += C
        if by_distance is not None:
            by_distance.update(arr["distance"][arr["scored"]], correct[arr["scored"]])
        if by_delay is not None:
            by_delay.update(arr["delay"][arr["scored"]], correct[arr["scored"]])
        return self.model.detach_state(new_state), done, obs, info

