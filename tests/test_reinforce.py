"""train.mode=reinforce: policy gradient from the reward alone, against a running-mean baseline; sampled actions."""

import numpy as np
import pytest
import torch

from agents import run
from agents.config import ConfigError, load_config
from agents.episodes import Chunk
from agents.trainer import Trainer
from tests.test_run import TINY_ENVS, TINY_MODEL, tiny


def trainer(tmp_path, *extra) -> Trainer:
    cfg = load_config(["env=ContinualShift-v0", "agent=memnet", "train.mode=reinforce", "train.entropy_coef=0",
                       "train.grad_clip=0", "train.lr=0.01", f"run_dir={tmp_path}",
                       *TINY_ENVS["ContinualShift-v0"], *TINY_MODEL, *extra])
    return Trainer(cfg, tmp_path)


def one_step_chunk(tokens: torch.Tensor, action: int, reward: float) -> Chunk:
    """A chunk whose last step is scored in every lane, where the agent took `action` and got `reward`."""
    B, C = tokens.shape
    scored = torch.zeros(B, C, dtype=torch.bool)
    scored[:, -1] = True
    return Chunk(tokens=tokens, targets=torch.where(scored, 0, -1), scored=scored,
                 writes=torch.zeros(B, C, dtype=torch.bool), actions=torch.full((B, C), action),
                 rewards=torch.where(scored, reward, 0.0), meta={"episode": np.zeros((B, C), dtype=np.int64),
                                                                 "position": np.tile(np.arange(C), (B, 1)),
                                                                 "task": np.zeros((B, C), dtype=np.int64)})


@pytest.mark.parametrize("reward,baseline,up", [(1.0, 0.0, True), (0.0, 0.5, False)])
def test_an_action_paid_above_the_baseline_becomes_likelier_and_below_it_rarer(tmp_path, reward, baseline, up):
    tr = trainer(tmp_path)
    tr.reward_baseline = baseline
    tokens = torch.randint(1, tr.model_cfg.vocab_size, (tr.cfg.train.lanes, 6))
    chunk = one_step_chunk(tokens, action=3, reward=reward)
    last = torch.tensor([5])

    def logp() -> torch.Tensor:
        with torch.no_grad():
            logits, _, _ = tr.model(tokens, tr.model.initial_state(tr.cfg.train.lanes), read_at=last)
        return torch.log_softmax(logits[:, 0].float(), -1)[:, 3]  # (B,)

    before = logp()
    logits, _, aux = tr.model(tokens, tr.model.initial_state(tr.cfg.train.lanes), chunk.writes, chunk.meta,
                              read_at=last)
    tr._learn(chunk.columns(last), logits.float(), aux)
    after = logp()
    assert bool(((after > before) if up else (after < before)).all())
    # the baseline moves 1 - baseline_decay of the way to the chunk's mean reward
    assert tr.reward_baseline == pytest.approx(0.99 * baseline + 0.01 * reward)


def test_a_refused_chunk_leaves_the_reward_baseline_as_it_was(tmp_path):
    """The baseline was moved before the loss's finiteness check: a chunk refused as diverged left it inf, and every
    later chunk failed the same way, valid rewards or not."""
    tr = trainer(tmp_path)
    tr.reward_baseline = 0.25
    tokens = torch.randint(1, tr.model_cfg.vocab_size, (tr.cfg.train.lanes, 6))
    last = torch.tensor([5])
    for reward, refused in ((float("inf"), True), (1.0, False)):
        chunk = one_step_chunk(tokens, action=3, reward=reward)
        logits, _, aux = tr.model(tokens, tr.model.initial_state(tr.cfg.train.lanes), chunk.writes, chunk.meta,
                                  read_at=last)
        if refused:
            with pytest.raises(ConfigError, match="training diverged"):
                tr._learn(chunk.columns(last), logits.float(), aux)
            assert tr.reward_baseline == 0.25
        else:  # the next chunk learns as if the refused one had not come
            tr._learn(chunk.columns(last), logits.float(), aux)
            assert tr.reward_baseline == pytest.approx(0.99 * 0.25 + 0.01 * 1.0)


def test_reinforce_samples_its_actions_instead_of_taking_the_argmax(tmp_path):
    """Greedy acting matches the chunk forward's argmax at every scored step (tests/test_episodes.py); sampling
    from this untrained policy (no single token near certain) departs from it at many of them."""
    tr = trainer(tmp_path)
    seen = []
    learner = tr._learn

    def record(chunk, logits, aux):
        seen.append((chunk.actions[chunk.scored], logits.argmax(-1)[chunk.scored]))
        return learner(chunk, logits, aux)

    tr._learn = record  # the trainer's own episode, so its own switch (train.mode=reinforce -> sample) is tested
    tr.train_episode()
    taken = torch.cat([a for a, _ in seen])
    greedy = torch.cat([g for _, g in seen])
    assert len(taken) >= 8 and (taken != greedy).float().mean() > 0.2


@pytest.mark.parametrize("env_id", sorted(TINY_ENVS))
def test_reinforce_runs_end_to_end(env_id, tmp_path, capsys):
    assert run.main(tiny(env_id, "memnet", tmp_path / "run", "train.mode=reinforce")) == 0
    assert (tmp_path / "run" / "metrics.json").exists()


def test_reinforce_learns_recall_from_the_reward_alone(tmp_path):
    """The update does more than point the right way: a tiny MemNet on a LongDependency of 8 values (chance 1/8)
    answers 0.00-0.02 untrained and 0.97-1.00 greedily after 20 reinforce episodes (seeds 0-2, ~6 s); with the
    policy-gradient term zeroed (the entropy bonus alone) it ends at 0.125. README "Agents" (train.mode) has the
    full-size runs."""
    cfg = load_config(tiny("LongDependency-v0", "memnet", tmp_path, "train.mode=reinforce", "train.lanes=8",
                           "env.kwargs.vocab_size=34", "env.kwargs.queries_per_episode=8",
                           "env.kwargs.distances=[1,2,4,8]", "env.kwargs.episode_length=96"))
    tr = Trainer(cfg, tmp_path)
    chance = 1 / ((34 - 2) // 4)  # (V - 2) // 4 values
    assert tr.evaluate_all()[0] < chance
    for _ in range(20):
        tr.train_episode()
    assert tr.evaluate_all()[0] >= 0.9


def test_reinforce_loss_on_hand_made_values():
    """Two actions at even odds, action 1 taken and paid 1 against a baseline of 0.25: loss = -0.75 log 0.5 minus
    the entropy bonus (entropy log 2); the baseline moves a (1 - decay) step towards the chunk's mean reward."""
    from agents.objectives import reinforce_loss, supervised_loss

    chunk = one_step_chunk(torch.zeros(1, 2, dtype=torch.long), action=1, reward=1.0)
    logits = torch.zeros(1, 2, 2)  # (B, C, V)
    policy, bonus, baseline = reinforce_loss(logits, chunk, baseline=0.25, entropy_coef=0.1, baseline_decay=0.9)
    log2 = float(np.log(2))
    assert policy.item() == pytest.approx(0.75 * log2) and bonus.item() == pytest.approx(-0.1 * log2)
    assert baseline == pytest.approx(0.9 * 0.25 + 0.1 * 1.0)
    assert supervised_loss(logits, chunk).item() == pytest.approx(log2)  # target 0 at even odds


def test_reinforce_learns_the_same_whatever_the_answers(tmp_path):
    """The answers (`info["target"]`) never reach reinforce's update: with every chunk's targets replaced by other
    tokens before the learner sees them, two episodes end in bitwise the same weights and baseline."""
    runs = []
    for garble in (False, True):
        tr = trainer(tmp_path / str(garble), "train.entropy_coef=0.01")
        learner = tr._learn

        def learn(chunk, logits, aux, learner=learner, garble=garble):
            if garble:  # its own generator: the policy's samples must draw from the same global stream
                other = torch.randint(0, 7, chunk.targets.shape, generator=torch.Generator().manual_seed(1))
                chunk = Chunk(**{**chunk.__dict__, "targets": other})
            return learner(chunk, logits, aux)

        tr._learn = learn
        tr.train_episode()
        tr.train_episode()
        runs.append(({k: v.clone() for k, v in tr.model.state_dict().items()}, tr.reward_baseline))
    (w0, b0), (w1, b1) = runs
    assert b0 == b1 and all(torch.equal(w0[k], w1[k]) for k in w0)
