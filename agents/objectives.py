"""The learning objectives of `train.mode`, on the scored steps of one chunk (the trainer adds the memory's own
regularisers to them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.episodes import Chunk


def supervised_loss(logits: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """Cross-entropy against `info["target"]` at the scored steps. logits (B, C, V); chunk fields (B, C)."""
    mask = chunk.scored
    return F.cross_entropy(logits[mask], chunk.targets[mask])


def reinforce_loss(logits: torch.Tensor, chunk: Chunk, baseline: float, entropy_coef: float,
                   baseline_decay: float) -> tuple[torch.Tensor, float]:
    """REINFORCE from reward only: the log-probability of the actions actually taken, weighted by their advantage
    over a running-mean reward baseline, minus an entropy bonus. Returns the loss and the updated baseline (the
    baseline of this chunk's advantages is the one from before it, so it never includes their own reward)."""
    mask = chunk.scored
    logp = F.log_softmax(logits[mask], -1)  # (n, V) at the n scored steps
    taken = logp.gather(-1, chunk.actions[mask][:, None])[:, 0]  # (n,)
    reward = chunk.rewards[mask]  # (n,)
    advantage = reward - baseline
    entropy = -(logp.exp() * logp).sum(-1)  # (n,)
    loss = -(advantage * taken).mean() - entropy_coef * entropy.mean()
    return loss, baseline_decay * baseline + (1 - baseline_decay) * float(reward.mean())
