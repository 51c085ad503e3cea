"""The learning objectives of `train.mode`, on the scored steps of one chunk (the trainer adds the memory's own
regularisers to them), and which loss weight to blame when a weighted term overflows."""

from __future__ import annotations

import math
from operator import attrgetter

import torch
import torch.nn.functional as F

from agents.config import ConfigError
from agents.episodes import Chunk


class TrainingDiverged(ConfigError):
    """The run's own settings made its numbers overflow (train.lr, a loss weight): the same again from the same
    checkpoint and seed, so a sweep's trial that meets it ends there instead of being retried (`agents.tune_trial`)."""


def chunk_loss(train, logits: torch.Tensor, chunk: Chunk, regularisers: dict[str, torch.Tensor],
               baseline: float) -> tuple[torch.Tensor, float, dict[str, torch.Tensor]]:
    """One chunk's loss: `train.mode`'s objective on the scored steps plus the memory's weighted regularisers (MemNet's
    aux["losses"]). Returns the loss, the reward baseline after the chunk, and each weighted term by the config key of
    its weight (`overflowing_weight`)."""
    loss, terms = logits.new_zeros(()), {}
    if chunk.scored.any():
        if train.mode == "supervised":
            loss = supervised_loss(logits, chunk)
        else:
            loss, terms["train.entropy_coef"], baseline = reinforce_loss(logits, chunk, baseline, train.entropy_coef,
                                                                         train.baseline_decay)
    terms.update({f"memory.{name}_weight": term for name, term in regularisers.items()})
    for term in terms.values():
        loss = loss + term
    return loss, baseline, terms


def supervised_loss(logits: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """Cross-entropy against `info["target"]` at the scored steps. logits (B, C, V); chunk fields (B, C)."""
    mask = chunk.scored
    return F.cross_entropy(logits[mask], chunk.targets[mask])


def reinforce_loss(logits: torch.Tensor, chunk: Chunk, baseline: float, entropy_coef: float,
                   baseline_decay: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """REINFORCE from reward only: the log-probability of the actions actually taken, weighted by their advantage
    over a running-mean reward baseline, minus an entropy bonus. Returns the policy loss, the entropy term to add
    to it (-entropy_coef x the mean entropy) and the updated baseline (the baseline of this chunk's advantages is
    the one from before it, so it never includes their own reward)."""
    mask = chunk.scored
    logp = F.log_softmax(logits[mask], -1)  # (n, V) at the n scored steps
    taken = logp.gather(-1, chunk.actions[mask][:, None])[:, 0]  # (n,)
    reward = chunk.rewards[mask]  # (n,)
    advantage = reward - baseline
    entropy = -(logp.exp() * logp).sum(-1)  # (n,)
    bonus = -(entropy_coef * entropy.mean())  # policy + bonus: bit for bit the policy loss minus the weighted entropy
    return -(advantage * taken).mean(), bonus, baseline_decay * baseline + (1 - baseline_decay) * float(reward.mean())


OVERFLOW_NEAR = 1e30  # a weighted term this large leaves its gradient a factor ~3e8 below float32's limit (3.4e38)


def overflowing_weight(terms: dict[str, torch.Tensor], cfg) -> str | None:
    """The loss weight to blame for a loss or an update that came out non-finite, as a hint, or None (then it is
    divergence: lower train.lr). terms: config key of a weight -> its weighted term as added to the loss.

    Each weighted term is a bounded quantity (an entropy, a pressure in [0, 2]) times its weight, so a term that is
    inf, or near float32's limit, is its weight's doing: `memory.util_weight=1e38` made the loss -3.4e38 and its
    gradient inf, and the run said "lower train.lr". A NaN term is not (NaN inputs: divergence)."""
    values = {key: float(term.detach()) for key, term in terms.items()}
    loud = [key for key, value in values.items() if not math.isnan(value) and abs(value) >= OVERFLOW_NEAR]
    if not loud:
        return None
    key = max(loud, key=lambda k: abs(values[k]))
    return (f"the loss term weighted by {key}={attrgetter(key)(cfg)} is {values[key]:.3g}, at float32's limit "
            f"(~3.4e38), and it or its gradient overflowed; lower {key}")
