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

    An episode shows trial i's key at index 2 + 3i and reveals its answer at 3 + 3i. Memory: 8 bytes x lanes x
    keys_per_task for each task shown so far (made when the task is first revealed), plus one such array for the
    eval chain.
    """

    def __init__(self, episode_length: int, num_keys: int):
        self.L, self.K = episode_length, num_keys
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

    def _seen(self, task: int, phase: str) -> list[np.ndarray]:
        """The (B, K) arrays that hold earlier reveals of `task`'s pairs for an episode of `phase`."""
        seen = [self.train[task]] if task in self.train else []
        if phase == "eval" and self.chain is not None:  # the chain is of this task (eval episodes are one task)
            seen.append(self.chain)
        return seen

    def fill(self, key_distance: np.ndarray, start: int, trial_task: np.ndarray, slot: np.ndarray, phase: str,
             task: int | None) -> None:
        """Where `key_distance` (B, N) (each trial's key step: a view into the episode's distances) is -1, the steps
        back to the pair's last reveal before this episode, if any. trial_task, slot (B, N); `start` the episode's
        stream position; `task`: the episode's one task, None where it blends two."""
        if task is not None:  # one task: exactly the first K trials are the pairs' first showings in the episode
            n = min(self.K, key_distance.shape[1])
            rows, first = np.arange(slot.shape[0])[:, None], slot[:, :n]  # (B, 1), (B, n)
            seen = self._seen(task, phase)
            if seen:
                last = seen[0][rows, first]  # (B, n)
                for more in seen[1:]:
                    np.maximum(last, more[rows, first], out=last)
                key_at = start + 2 + 3 * np.arange(n, dtype=np.int64)  # (n,)
                key_distance[:, :n] = np.where(last >= 0, key_at - last, -1)
            return
        key_at = start + 2 + 3 * np.arange(key_distance.shape[1], dtype=np.int64)  # (N,)
        need = key_distance < 0  # (B, N): no reveal of the pair earlier in this episode
        last = np.full(key_distance.shape, -1, dtype=np.int64)  # (B, N)
        lane = np.broadcast_to(np.arange(key_distance.shape[0])[:, None], key_distance.shape)
        for j in np.unique(trial_task[need]).tolist():
            pick = need & (trial_task == j)
            for seen in self._seen(j, phase):
                last[pick] = np.maximum(last[pick], seen[lane[pick], slot[pick]])
        found = need & (last >= 0)
        key_distance[found] = (key_at[None, :] - last)[found]

    def record(self, start: int, trial_task: np.ndarray, slot: np.ndarray, phase: str, task: int | None) -> None:
        """Note this episode's reveals; a training episode ends the eval chain. Arguments as for `fill`."""
        B, N = slot.shape
        at = start + 3 + 3 * np.arange(N, dtype=np.int64)  # (N,) the reveals' positions
        if phase == "eval":
            if self.chain is None:
                self.chain = np.full((B, self.K), -1, dtype=np.int64)
            self.chain_episodes += 1
            self._note(self.chain, slot, at, trial_task, None)  # an eval episode is one task
            return
        self.chain_task = None
        for j in ([task] if task is not None else np.unique(trial_task).tolist()):
            if j not in self.train:
                self.train[j] = np.full((B, self.K), -1, dtype=np.int64)
            self._note(self.train[j], slot, at, trial_task, j if task is None else None)

    def _note(self, seen: np.ndarray, slot: np.ndarray, at: np.ndarray, trial_task: np.ndarray,
              only: int | None) -> None:
        """seen[b, slot] = the latest of the positions `at` (N,) of the trials of task `only` (None: all trials, of
        one task)."""
        if only is None:  # the last K trials show each slot once (one key order per episode, repeated every K)
            tail = max(0, slot.shape[1] - self.K)
            seen[np.arange(slot.shape[0])[:, None], slot[:, tail:]] = at[tail:]
            return
        pick = trial_task == only  # (B, N)
        lane = np.broadcast_to(np.arange(slot.shape[0])[:, None], slot.shape)
        np.maximum.at(seen, (lane[pick], slot[pick]), np.broadcast_to(at, slot.shape)[pick])  # the latest of repeats
