"""Mutation-testing kills for the trainer: the torch RNG state a resumed run continues from, the token count,
gradient clipping, chunks that learn from a regulariser alone, unmeasured evaluations, the final checkpoint and the
re-evaluation of a checkpoint made before training."""

import math

import torch
from omegaconf import OmegaConf

from agents import run
from agents.checkpoint import load_checkpoint
from agents.config import load_config
from agents.episodes import EpisodeStats
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


def test_an_evaluation_without_a_scored_step_is_nan_not_zero_accuracy(tmp_path):
    """No scored step means nothing was measured: 0.0 would enter R and b as total forgetting (cl_metrics skips
    NaN)."""
    trainer = Trainer(load_config(tiny("ContinualShift-v0", "memnet", tmp_path)), tmp_path)
    play = trainer.runner.run

    def unscored(*args, **kwargs):
        state, stats = play(*args, **kwargs)
        return state, EpisodeStats(steps=stats.steps)  # as if the env had scored none of its steps

    trainer.runner.run = unscored
    assert math.isnan(trainer.evaluate_task(0))


def test_tokens_count_every_lanes_steps(tmp_path):
    """perf/tokens_per_s divides train_tokens by the time: B lanes step together, so an episode is B x its steps."""
    trainer = Trainer(load_config(tiny("ContinualShift-v0", "memnet", tmp_path)), tmp_path)  # train.lanes=2
    trainer.train_episode()
    assert trainer.train_steps > 0 and trainer.train_tokens == 2 * trainer.train_steps


def test_every_update_uses_gradients_clipped_to_train_grad_clip(tmp_path):
    trainer = Trainer(load_config(tiny("ContinualShift-v0", "memnet", tmp_path, "train.grad_clip=0.001")), tmp_path)
    norms, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):  # the gradient the optimiser is about to apply
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters()
                                                          if p.grad is not None])))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train_episode()
    assert norms and max(norms) <= 0.001 * 1.0001


def test_chunks_without_a_scored_step_still_learn_from_the_memory_regulariser(tmp_path):
    """LongDependency's chunks mostly hold no query; with memory.util_weight > 0 each of them has a loss of its own
    and takes an update (the learner returned None for them, skipping the regulariser's step)."""
    cfg = load_config(tiny("LongDependency-v0", "memnet", tmp_path, "memory.util_weight=0.1"))
    trainer = Trainer(cfg, tmp_path)
    stats = trainer.train_episode()
    assert stats.updates == 8 and stats.losses == 8  # 64 steps in chunks of 8; only 4 steps are scored


def test_the_last_episode_is_checkpointed_off_the_checkpoint_every_grid(tmp_path):
    """3 episodes with train.checkpoint_every=2: the run's checkpoint must hold all 3 (one after episode 2 was
    there already, so fit's own save at the end did not write one)."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("LongDependency-v0", "lstm", run_dir, "train.episodes=3", "train.checkpoint_every=2")) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["episode"] == 3


def test_store_entries_record_their_position_in_the_episode_across_chunks(tmp_path):
    """The "position" metadata is steps since the episode began, so it runs on past the first chunk (train.chunk=8)
    up to the episode's last step, not from 0 again in every chunk."""
    trainer = Trainer(load_config(tiny("LongDependency-v0", "memnet", tmp_path)), tmp_path)
    trainer.train_episode()  # 64 steps
    store = trainer.model.store
    ids = store._row_id[store._row_id >= 0]
    positions = store.meta_of(ids, "position")
    assert len(ids) and positions.min() >= 0 and 8 <= positions.max() <= 63


def test_a_reevaluation_of_a_checkpoint_made_before_training_sees_the_runs_evaluation_episodes(tmp_path):
    """restore(rewind_eval=True) drops the evaluation resets that followed the last training episode; in a run that
    never trained that is every reset, the first (seeded) one too, so the re-evaluation replays the run's
    evaluation from its first episode rather than continuing the eval stream after it."""
    cfg = load_config(tiny("NeedleRecall-v0", "memnet", tmp_path / "a"))
    config = OmegaConf.to_container(cfg, resolve=True)

    def evaluated(trainer):
        seen, step = [], trainer.venv.step

        def recorded(actions):
            out = step(actions)
            seen.append(out[0].copy())  # the observations the evaluation was shown
            return out

        trainer.venv.step = recorded
        try:
            accuracy = trainer.evaluate_all()
        finally:
            trainer.venv.step = step
        return accuracy, seen

    trainer = Trainer(cfg, tmp_path / "a")
    accuracy, episodes = evaluated(trainer)
    ckpt = trainer.save(config)
    again = Trainer(cfg, tmp_path / "b")
    again.restore(ckpt, config, rewind_eval=True)
    assert again.reset_log == []
    accuracy_again, episodes_again = evaluated(again)
    assert len(episodes_again) == len(episodes) > 0
    assert all((a == b).all() for a, b in zip(episodes_again, episodes, strict=True))  # the same observations
    assert accuracy_again == accuracy


def test_the_models_own_losses_are_added_to_the_task_loss_and_trained_on(tmp_path):
    """The weighted memory regularisers (aux["losses"]) join the cross-entropy: the loss reported is their sum, and
    the update's gradient comes from the regulariser too (here the only term that reaches the weights)."""
    import torch.nn.functional as F

    from agents.episodes import Chunk

    trainer = Trainer(load_config(tiny("LongDependency-v0", "memnet", tmp_path, "train.grad_clip=0")), tmp_path)
    V = trainer.model.cfg.vocab_size
    logits = torch.randn(1, 2, V)
    chunk = Chunk(tokens=torch.zeros(1, 2, dtype=torch.long), targets=torch.tensor([[3, -1]]),
                  scored=torch.tensor([[True, False]]), writes=torch.zeros(1, 2, dtype=torch.bool),
                  actions=torch.zeros(1, 2, dtype=torch.long), rewards=torch.zeros(1, 2), meta={})
    bias = trainer.model.head.bias
    before = bias.detach().clone()
    value = trainer._learn(chunk, logits, {"losses": {"util": 2.0 * bias.sum(), "pressure": torch.tensor(0.25)}})
    expected = F.cross_entropy(logits[0, :1], torch.tensor([3])) + 2.0 * before.sum() + 0.25
    assert math.isclose(value, float(expected), rel_tol=1e-5)
    assert torch.equal(bias.grad, torch.full_like(bias, 2.0)) and not torch.equal(bias.detach(), before)
