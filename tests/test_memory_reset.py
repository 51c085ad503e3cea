"""memory.reset (never / episode / task) in training and in evaluation, and the mode acting runs in."""

import numpy as np
import torch
from omegaconf import OmegaConf

from agents.config import load_config
from agents.trainer import Trainer
from tests.test_run import TINY_ENVS, TINY_MODEL

CS = ["env=ContinualShift-v0", "agent=memnet", *TINY_ENVS["ContinualShift-v0"], *TINY_MODEL,
      "env.kwargs.episodes_per_task=2"]  # schedule: task 0, 0, 1, 1


def trainer_with(tmp_path, *extra) -> tuple[Trainer, list]:
    """A tiny ContinualShift trainer whose runner records, at every episode start, (phase, task, the lanes'
    clocks, store entries)."""
    trainer = Trainer(load_config([*CS, *extra]), tmp_path)
    starts, run = [], trainer.runner.run

    def recording_run(state, obs, info, episode, learner=None, **kw):
        store = trainer.model.store
        starts.append(("train" if learner else "eval", int(info["task_id"][0]), state["ctrl.pos"].tolist(),
                       len(store) if store is not None else 0))
        return run(state, obs, info, episode, learner=learner, **kw)

    trainer.runner.run = recording_run
    return trainer, starts


def test_reset_episode_clears_memory_before_every_training_and_evaluation_episode(tmp_path):
    trainer, starts = trainer_with(tmp_path, "memory.reset=episode")
    trainer.train_episode()
    trainer.evaluate_all()  # two tasks, one episode each
    trainer.train_episode()
    assert [(phase, pos, n) for phase, _, pos, n in starts] == [("train", [0, 0], 0)] * 1 + [("eval", [0, 0], 0)] * 2 \
        + [("train", [0, 0], 0)]


def test_reset_never_carries_memory_into_evaluation_and_the_next_episode(tmp_path):
    trainer, starts = trainer_with(tmp_path, "memory.reset=never")
    trainer.train_episode()
    trainer.evaluate_all()
    trainer.train_episode()
    after_training = starts[0][2][0] + 1  # every later start sees the first training episode's clock and entries
    assert all(pos[0] >= after_training and n > 0 for _, _, pos, n in starts[1:])
    assert starts[1][2] == starts[2][2] == starts[3][2]  # evaluation ran on a copy: training resumes from it


def test_reset_task_clears_when_meeting_another_task_than_the_one_just_trained(tmp_path):
    trainer, starts = trainer_with(tmp_path, "memory.reset=task")
    for _ in range(3):  # tasks 0, 0, 1
        trainer.train_episode()
    trainer.evaluate_all()  # task 0 after training task 1: cleared; task 1: the memory of training
    cleared = [(phase, task, pos == [0, 0] and n == 0) for phase, task, pos, n in starts]
    assert cleared == [("train", 0, True), ("train", 0, False), ("train", 1, True), ("eval", 0, True),
                       ("eval", 1, False)]


def test_a_checkpoint_saved_after_a_task_reset_restores_with_its_cache(tmp_path):
    """Regression: the reset at the task boundary empties the cache's warm tier, whose keys had made several
    calibration rows; the next task's demotions start one row afresh while free warm slots keep the rows of the keys
    they held. The checkpoint was refused on resume and evaluate as "warm_cal points past the 1 channel rows
    (damaged state)"."""
    extra = ["memory.reset=task", "env.kwargs.trials_per_episode=40", "memory.cache_hot=16", "memory.cache_warm=512",
             "memory.cache_cold=0"]
    cfg = load_config([*CS, *extra])
    trainer = Trainer(cfg, tmp_path / "a")
    for _ in range(3):  # tasks 0, 0, 1
        trainer.train_episode()
    tiers = trainer.model.cache._store
    assert len(tiers.channels) == 1 and int(tiers.warm_cal.max()) > 0  # the state that was refused
    ckpt = trainer.save(OmegaConf.to_container(cfg, resolve=True))
    resumed = Trainer(cfg, tmp_path / "b")
    resumed.restore(ckpt, OmegaConf.to_container(cfg, resolve=True))
    ids = trainer.model.cache._ids.copy()  # every id the cache holds reads back alike
    assert len(ids) > 16 and np.array_equal(resumed.model.cache._ids, ids)  # (beyond the hot tier)
    mine, back = trainer.model.cache.get_batch(ids), resumed.model.cache.get_batch(ids)
    assert mine[2].all()
    for a, b in zip(mine, back, strict=True):
        assert torch.equal(a, b)


def test_acting_runs_without_dropout_and_learning_with_it(tmp_path):
    trainer = Trainer(load_config([*CS, "model.dropout=0.3"]), tmp_path)
    modes, forward = [], trainer.model.forward

    def recording_forward(tokens, state, writes=None, meta=None, read_at=None):
        acting = not torch.is_grad_enabled() and read_at is not None and len(read_at) == 1 and not bool(writes.any())
        modes.append(("act" if acting else "chunk", trainer.model.training, trainer.evaluating))
        return forward(tokens, state, writes, meta, read_at=read_at)

    trainer.model.forward = recording_forward
    trainer.train_episode()
    trainer.evaluate_all()
    trainer.train_episode()
    assert {m for kind, m, _ in modes if kind == "act"} == {False}  # train mode after a learning chunk acted w/ dropout
    assert any(training for kind, training, _ in modes if kind == "chunk")  # learning chunks still use dropout
    # an evaluation's chunk calls (its writes; with chunk acting its actions too) never see dropout
    assert {training for kind, training, evaluating in modes if kind == "chunk" and evaluating} == {False}


def test_a_memory_reset_ends_every_slot_content_for_the_lifetime_curves(tmp_path):
    """memory.reset=episode clears the slot bank before each training episode: the survival curves must count
    the contents it held as ended then, not as still alive (their ages would keep growing across episodes)."""
    trainer = Trainer(load_config([*CS, "memory.reset=episode"]), tmp_path)
    alive, run = [], trainer.runner.run

    def recording_run(state, obs, info, episode, learner=None, **kw):
        if learner is not None:
            alive.append(int((trainer.lifetimes.born >= 0).sum()))
        return run(state, obs, info, episode, learner=learner, **kw)

    trainer.runner.run = recording_run
    trainer.train_episode()
    written = int((trainer.lifetimes.born >= 0).sum())
    ended = int(trainer.lifetimes.lifetime_counts()[1].sum())
    trainer.train_episode()
    assert written > 0 and alive == [0, 0]
    assert int(trainer.lifetimes.lifetime_counts()[1].sum()) >= ended + written  # the reset ended all of them
