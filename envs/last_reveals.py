"""Each lane's last reveal of every (task, key slot) pair: ContinualShift's distances across episode boundaries."""

from __future__ import annotations

import numpy as np


class LastReveals:
    """Stream positions of the last reveal of each (task, key slot) pair, per lane.

    A lane's stream counts L positions per episode (observations 0 .. L-1; the terminal EOS is not acted upon), as
    LongDependency and NeedleRecall count theirs. Training episode e starts at e L. An eval episode continues the
    training stream as the memory sees it (the trainer evaluates a task on a copy of its memory): consecutive eval
    episodes of one task form one chain right after the training episodes so far, and a training episode or an
    eval of another task starts a new chain. So training distances never depend on the evaluations between them.

    Memory: 8 bytes x lanes x keys_per_task for each task trained so far (the arrays are made when a task is first
    revealed), plus one such array for the eval chain.
    """

    def __init__(self, episode_length: int):
        self.L = episode_length
        self.restart()

    def restart(self) -> None:
        self.train: dict[int, np.ndarray] = {}  # task -> (B, K) int64: position of the last reveal, -1 none
        self.chain_task: int | None = None  # the task of the current eval chain
        self.chain: np.ndarray | None = None  # (B, K) its reveals
        self.chain_episodes = 0  # eval episodes in the chain so far

    def eval_start(self, episode_index: int, task: int) -> int:
        """Stream position of the next eval episode of `task`, after `episode_index` training episodes."""
        if self.chain_task != task:
            self.chain_task, self.chain, self.chain_episodes = task, None, 0
        return (episode_index + self.chain_episodes) * self.L

    def fill(self, key_distance: np.ndarray, start: int, trial_task: np.ndarray, slot: np.ndarray,
             phase: str) -> None:
        """Where `key_distance` (B, N) (each trial's key step; the view into the episode's distances) is -1, the
        steps back to the pair's last reveal before this episode, if any. trial_task, slot (B, N); `start` the
        episode's stream position. The key step of trial i is at index 2 + 3i, its value (the reveal) at 3 + 3i."""
        need = key_distance < 0  # (B, N): no reveal of the pair earlier in this episode
        if not need.any():
            return
        last = np.full(key_distance.shape, -1, dtype=np.int64)  # (B, N)
        lane = np.broadcast_to(np.arange(key_distance.shape[0])[:, None], key_distance.shape)
        for task in np.unique(trial_task[need]).tolist():
            sources = [self.train.get(task)]
            if phase == "eval":
                sources.append(self.chain)
            pick = need & (trial_task == task)
            for seen in sources:
                if seen is not None:
                    last[pick] = np.maximum(last[pick], seen[lane[pick], slot[pick]])
        key_at = start + 2 + 3 * np.arange(key_distance.shape[1], dtype=np.int64)  # (N,)
        found = need & (last >= 0)
        key_distance[found] = (key_at[None, :] - last)[found]

    def record(self, start: int, trial_task: np.ndarray, slot: np.ndarray, phase: str, num_keys: int) -> None:
        """Note this episode's reveals (trial i's value at start + 3 + 3i); a training episode ends the eval chain."""
        B, N = slot.shape
        at = np.broadcast_to(start + 3 + 3 * np.arange(N, dtype=np.int64), (B, N))
        lane = np.broadcast_to(np.arange(B)[:, None], (B, N))
        if phase == "eval":
            if self.chain is None:
                self.chain = np.full((B, num_keys), -1, dtype=np.int64)
            np.maximum.at(self.chain, (lane, slot), at)  # the latest reveal of each slot (the chain is one task)
            self.chain_episodes += 1
            return
        self.chain_task = None
        for task in np.unique(trial_task).tolist():
            seen = self.train.setdefault(task, np.full((B, num_keys), -1, dtype=np.int64))
            pick = trial_task == task
            np.maximum.at(seen, (lane[pick], slot[pick]), at[pick])
