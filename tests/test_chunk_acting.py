"""Chunk acting (train.acting=chunk, auto's choice on open-loop envs): the env shows its next observations
(`upcoming`), one chunk forward gives the actions, and training ends exactly where step acting ends."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import ConfigError, load_config
from agents.episodes import EpisodeRunner, make_vector_env, resolve_acting
from agents.models import ModelConfig, build_model
from agents.trainer import Trainer
from memory.config import MemoryConfig
from tests.examples import examples
from tests.test_run import TINY_ENVS, TINY_MODEL

IDS = sorted(k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("envs."))


@pytest.mark.parametrize("env_id", IDS)
@settings(max_examples=examples(8), deadline=None)
@given(steps=st.integers(1, 300), seed=st.integers(0, 2**16), phase=st.sampled_from(["train", "eval"]))
def test_upcoming_shows_what_step_then_returns_whatever_the_actions(env_id, steps, seed, phase):
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    rng = np.random.default_rng(seed)
    obs, info = venv.reset(seed=seed, options={"phase": phase, "task_id": 0} if phase == "eval" else None)
    for _ in range(int(rng.integers(0, 20))):  # from somewhere inside the episode
        obs, _, term, _, info = venv.step(rng.integers(0, venv.vocab_size, 3))
        if term.all():
            obs, info = venv.reset(options={"phase": phase, "task_id": 0} if phase == "eval" else None)
    ahead, ahead_info = venv.upcoming(steps)
    n = ahead.shape[1]
    assert ahead.shape == (3, n) and 1 <= n <= steps and "target" not in ahead_info  # answers are not shown
    for i in range(n):
        obs, _, term, trunc, info = venv.step(rng.integers(0, venv.vocab_size, 3))
        assert np.array_equal(obs, ahead[:, i])
        for key, row in ahead_info.items():
            assert np.array_equal(np.asarray(info[key]), row[:, i]), key
        assert not term.any() or i == n - 1  # the episode can only end at the last step shown
    assert term.all() or n == steps  # fewer shown than asked: the episode ended there
    assert not trunc.any()
    venv.close()


def test_upcoming_needs_a_running_episode_and_a_positive_count():
    venv = make_vector_env("LongDependency-v0", 2, {})
    with pytest.raises(RuntimeError, match="call reset"):
        venv.upcoming(4)
    venv.reset(seed=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an integer"):
            venv.upcoming(bad)
    actions = np.zeros(2, dtype=np.int64)
    while not venv.step(actions)[2].all():  # to the episode's end: an autoreset is pending
        pass
    with pytest.raises(RuntimeError) as err:  # said "call reset() first", which the autoreset makes needless
        venv.upcoming(4)
    assert str(err.value).endswith("the last one ended; the next step() starts the next (autoreset) and takes no "
                                   "action")
    venv.step(actions)
    assert venv.upcoming(4)[0].shape == (2, 4)
    venv.close()


def fit(tmp_path, acting, env_id, agent="memnet", *extra):
    """A tiny trainer run (every training episode and an evaluation of every task after each) with train.acting."""
    cfg = load_config([f"env={env_id}", f"agent={agent}", f"run_dir={tmp_path}", *TINY_ENVS[env_id], *TINY_MODEL,
                       f"train.acting={acting}", *extra])
    trainer = Trainer(cfg, tmp_path)
    assert trainer.runner.acting == acting
    actions, stats = [], []
    step = trainer.venv.step
    trainer.venv.step = lambda a: (actions.append(np.asarray(a).copy()), step(a))[1]
    for _ in range(trainer.total_episodes):
        stats.append(trainer.train_episode())
        trainer.evaluate_all()
    return trainer, np.stack(actions), stats


@pytest.mark.parametrize("env_id,agent,extra", [
    ("ContinualShift-v0", "memnet", ()),
    ("NeedleRecall-v0", "memnet", ()),  # recall episodes write nothing
    ("LongDependency-v0", "lstm", ()),
    ("LongDependency-v0", "memnet", ("memory.util_weight=0.1",)),  # chunks with no scored step learn too
    ("ContinualShift-v0", "memnet", ("train.mode=reinforce",)),  # sampled actions: one (B, C', V) draw differed
])
def test_chunk_acting_trains_and_evaluates_exactly_like_step_acting(tmp_path, env_id, agent, extra):
    """The same actions at every step, the same weights (bitwise), memory, accuracy matrix and episode stats:
    chunk acting only removes the acting calls."""
    step, step_actions, step_stats = fit(tmp_path / "step", "step", env_id, agent, *extra)
    chunk, chunk_actions, chunk_stats = fit(tmp_path / "chunk", "chunk", env_id, agent, *extra)
    assert sum(s.act_calls for s in step_stats) > 0 and all(s.act_calls == 0 for s in chunk_stats)
    assert sum(s.scored for s in step_stats) > 0
    assert np.array_equal(chunk_actions, step_actions)
    for field in ("steps", "scored", "correct", "loss", "losses", "updates", "chunks"):
        assert [getattr(s, field) for s in chunk_stats] == [getattr(s, field) for s in step_stats], field
    for (name, a), b in zip(step.model.state_dict().items(), chunk.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(chunk.R, step.R)
    for name, t in step.state.items():
        assert torch.equal(chunk.state[name], t), name
    if getattr(step.model, "store", None) is not None:
        a, b = step.model.store.state_dict(), chunk.model.store.state_dict()
        assert len(step.model.store) == len(chunk.model.store) > 0
        for key in a:
            if key in ("seq", "stamp", "importance"):
                continue  # search hits advance the store's clock: step acting read every scored step twice (acting
                # call, then the learning forward), chunk acting once; the order of the entries is the same
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
        for key in ("seq", "stamp"):
            assert torch.equal(torch.argsort(a[key], stable=True), torch.argsort(b[key], stable=True)), key


def test_reinforce_samples_its_chunk_actions_from_the_policy(tmp_path):
    """train.mode=reinforce with chunk acting: the env gets draws from the chunk forward's policy (not its argmax),
    and the learner sees exactly the actions the env got."""
    cfg = load_config(["env=ContinualShift-v0", f"run_dir={tmp_path}", *TINY_ENVS["ContinualShift-v0"],
                       *TINY_MODEL, "train.mode=reinforce"])
    trainer = Trainer(cfg, tmp_path)
    assert trainer.runner.acting == "chunk"
    sent, seen, learn = [], [], trainer._learn
    step = trainer.venv.step
    trainer.venv.step = lambda a: (sent.append(np.asarray(a).copy()), step(a))[1]

    def recording_learn(chunk, logits, aux):
        scored = chunk.scored.numpy()
        probs = torch.softmax(logits.detach().float(), -1).gather(-1, chunk.actions[..., None])[..., 0]
        seen.append((chunk.actions.numpy()[scored], logits.argmax(-1).numpy()[scored], probs.numpy()[scored]))
        return learn(chunk, logits, aux)

    trainer.runner.run(trainer.state, *trainer.venv.reset(seed=0), 0, learner=recording_learn, sample=True)
    taken, greedy, probs = (np.concatenate(part) for part in zip(*seen, strict=True))
    sent = np.stack(sent, 1)  # (B, L)
    assert taken.size >= 16 and np.isin(taken, sent).all()
    assert (taken != greedy).sum() >= 3  # draws, not the argmax (16 draws: 7 of them off it with this seed)
    assert probs.min() > 1e-4  # each a token the policy gives weight to


def test_auto_picks_chunk_acting_on_open_loop_envs_without_dropout(tmp_path):
    base = ["env=LongDependency-v0", f"run_dir={tmp_path}", *TINY_ENVS["LongDependency-v0"], *TINY_MODEL]
    assert Trainer(load_config(base), tmp_path / "a").runner.acting == "chunk"
    # acting never sees dropout; the chunk forward trains with it, so its logits are not the acting ones
    assert Trainer(load_config([*base, "model.dropout=0.2"]), tmp_path / "b").runner.acting == "step"
    assert Trainer(load_config([*base, "model.dropout=0.2", "train.acting=chunk"]),
                   tmp_path / "c").runner.acting == "chunk"  # asked for: the actions see dropout
    # reinforce: one forward draws the actions and takes their gradient, under the same dropout masks
    assert Trainer(load_config([*base, "model.dropout=0.2", "train.mode=reinforce"]),
                   tmp_path / "d").runner.acting == "chunk"


@pytest.mark.parametrize("acting", ["step", "chunk"])
def test_reinforce_with_dropout_learns_the_policy_its_actions_were_drawn_from(tmp_path, monkeypatch, acting):
    """REINFORCE's gradient is that of log pi(action) for the policy that drew the action. Step acting draws
    without dropout and its learning forward ran with it (log-probabilities off by up to 7.7 nats here at dropout
    0.5): the update now runs without dropout too. Chunk acting draws from the learning forward itself."""
    from agents import episodes

    cfg = load_config(["env=ContinualShift-v0", f"run_dir={tmp_path}", *TINY_ENVS["ContinualShift-v0"], *TINY_MODEL,
                       "train.mode=reinforce", "model.dropout=0.5", f"train.acting={acting}"])
    trainer = Trainer(cfg, tmp_path)
    drawn, learnt, choose, learn = [], [], episodes._choose, trainer._learn

    def recording_choose(logits, sample):
        assert sample
        if (logits.dim() == 3) == (acting == "chunk"):  # (a chunk's draw calls it again per step)
            drawn.append(logits.detach().float().clone())  # step: (B, V) per acting call; chunk: (B, C', V)
        return choose(logits, sample)

    def recording_learn(chunk, logits, aux):
        learnt.append(logits.detach().float().clone())  # (B, C', V) at the chunk's scored steps
        return learn(chunk, logits, aux)

    monkeypatch.setattr(episodes, "_choose", recording_choose)
    torch.manual_seed(0)
    trainer.runner.run(trainer.state, *trainer.venv.reset(seed=0), 0, learner=recording_learn, sample=True)
    drawn = torch.cat([d[:, None] if d.dim() == 2 else d for d in drawn], 1)  # (B, scored steps, V)
    learnt = torch.cat(learnt, 1)
    assert drawn.shape == learnt.shape and drawn.shape[1] >= 8
    torch.testing.assert_close(torch.log_softmax(learnt, -1), torch.log_softmax(drawn, -1), atol=1e-4, rtol=0)


def test_bad_acting_values_and_closed_loop_envs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"train.acting='ahead': choose one of \('auto', 'step', 'chunk'\)"):
        load_config(["train.acting=ahead"])

    class ClosedLoop:  # an env without upcoming(): its observations may depend on the actions
        num_envs = 2

    assert resolve_acting("auto", ClosedLoop(), 0.0) == "step"
    with pytest.raises(ConfigError, match="train.acting=chunk needs an open-loop env .* use train.acting=step"):
        resolve_acting("chunk", ClosedLoop(), 0.0)


def test_an_env_whose_upcoming_lies_is_named(tmp_path):
    """upcoming() must show what step() then returns; a chunk that saw other observations is refused, not learnt."""
    cfg = load_config(["env=LongDependency-v0", f"run_dir={tmp_path}", *TINY_ENVS["LongDependency-v0"], *TINY_MODEL])
    trainer = Trainer(cfg, tmp_path)
    upcoming = trainer.venv.upcoming
    trainer.venv.upcoming = lambda n: ((lambda o, i: ((o + 1) % trainer.venv.vocab_size, i))(*upcoming(n)))
    with pytest.raises(RuntimeError, match="upcoming\\(\\) showed other observations .* use train.acting=step"):
        trainer.train_episode()


def test_the_runner_default_is_auto():
    """EpisodeRunner's own default is the product's: chunk acting on a memstream env, for a model without dropout."""
    venv = make_vector_env("LongDependency-v0", 2, {})
    model = build_model("lstm", ModelConfig(vocab_size=int(venv.vocab_size), dim=16, layers=1, heads=2, window=8,
                                             memory=MemoryConfig(dim=16, slots=0, store=False)))
    assert EpisodeRunner(venv, model, torch.device("cpu"), chunk=8).acting == "chunk"
    venv.close()


def test_lanes_that_end_at_different_steps_are_refused(tmp_path):
    """Every lane of a memstream env ends with the others; an env whose lanes end apart would leave the others'
    episode cut in the middle of a chunk: refused, not learnt."""
    cfg = load_config(["env=LongDependency-v0", f"run_dir={tmp_path}", *TINY_ENVS["LongDependency-v0"], *TINY_MODEL])
    trainer = Trainer(cfg, tmp_path)
    step = trainer.venv.step

    def one_lane_ends(actions):
        obs, reward, terminated, truncated, info = step(actions)
        truncated = truncated.copy()
        truncated[0] = True
        return obs, reward, terminated, truncated, info

    trainer.venv.step = one_lane_ends
    with pytest.raises(RuntimeError, match="memstream envs end all lanes together; this env did not"):
        trainer.train_episode()


def test_update_ms_is_per_chunk_that_had_a_loss():
    """An update's time counts only the learning chunks with a loss (`losses`); the chunks without one (`updates`
    counts them too) took no update, and dividing by them made updates look faster."""
    from agents.episodes import EpisodeStats

    stats = EpisodeStats(losses=2, updates=4, act_calls=0, chunks=4)
    stats.seconds.update(update=1.0, learn=2.0)
    assert stats.milliseconds == {"act_ms": None, "chunk_forward_ms": 500.0, "update_ms": 500.0}
