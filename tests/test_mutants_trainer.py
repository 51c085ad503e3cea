"""Mutation-testing kills for the trainer's checkpoints: the torch RNG state a resumed run continues from."""

import torch
from omegaconf import OmegaConf

from agents.config import load_config
from agents.trainer import Trainer
from tests.test_run import tiny


def test_restore_brings_back_the_torch_rng_so_a_reinforce_run_continues_identically(tmp_path):
    """train.mode=reinforce samples its actions from torch's generator: a trainer restored from a checkpoint must
    draw what the saving one draws next (the fast resume test is supervised, where no draw depends on it)."""
    cfg = load_config(tiny("ContinualShift-v0", "memnet", tmp_path / "a", "train.mode=reinforce"))
    config = OmegaConf.to_container(cfg, resolve=True)
    straight = Trainer(cfg, tmp_path / "a")
    straight.train_episode()
    ckpt = straight.save(config)
    saved_rng = torch.get_rng_state()
    straight.train_episode()

    resumed = Trainer(cfg, tmp_path / "b")  # seeds torch afresh and draws its initial weights
    assert not torch.equal(torch.get_rng_state(), saved_rng)
    resumed.restore(ckpt, config)
    assert torch.equal(torch.get_rng_state(), saved_rng)
    resumed.train_episode()
    for name, w in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], w), name
    assert all(torch.equal(resumed.state[k], v) for k, v in straight.state.items())


def test_restore_brings_back_the_last_evaluation(tmp_path):
    """The final summary (report's `accuracy`, run.py's eval/accuracy) reads `last_eval`: resuming a finished run
    (nothing left to train, no new evaluation) must report what the run reported."""
    cfg = load_config(tiny("ContinualShift-v0", "memnet", tmp_path / "a"))
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer = Trainer(cfg, tmp_path / "a")
    trainer.train_episode()
    evaluated = trainer.evaluate_all()
    assert set(evaluated) == {0, 1} and all(0.0 <= a <= 1.0 for a in evaluated.values())
    ckpt = trainer.save(config)
    resumed = Trainer(cfg, tmp_path / "b")
    resumed.restore(ckpt, config)
    assert resumed.last_eval == evaluated
    assert resumed.curves == trainer.curves
