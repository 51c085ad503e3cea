"""The trainer's metrics recomputed from what the env saw: a stub model that answers a known random half of the
scored steps correctly, every step recorded at the env, and R, b, ACC/BWT/FWT/forgetting (final and the cl/*
logged at each evaluation), forgetting curves, eval accuracy, accuracy by distance and recall by delay rebuilt
from that record alone (README "Continual-learning metrics" and "How a run works")."""

import math
import time

import numpy as np
import pytest
import torch

from agents import run
from agents.config import load_config
from agents.episodes import EpisodeRunner, make_vector_env
from agents.models import AgentModel
from agents.trainer import Trainer
from tests.test_metrics_reference import ref_cl


class Oracle(AgentModel):
    """Answers the step being acted on from the env's current info: right with probability p, else wrong.
    Reports per-chunk memory metrics {"store_entries": calls so far, "write_rate": 0.25} in its chunk calls."""

    def __init__(self, venv, p=0.5, seed=0):
        super().__init__()
        self.venv, self.p, self.rng, self.calls = venv, p, np.random.default_rng(seed), 0
        self.V = int(venv.single_action_space.n)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def initial_state(self, batch_size):
        return {"h": torch.zeros(batch_size, 1)}

    def reset_memory(self, state, lanes):
        return state

    def memory_bytes(self, state):
        return 0

    def forward(self, tokens, state, writes=None, meta=None, read_at=None):
        B, T = tokens.shape
        logits = torch.zeros(B, T if read_at is None else len(read_at), self.V)
        metrics = {}
        if read_at is not None and len(read_at) == 1 and read_at[0] == T - 1 and not bool(writes.any()):
            target = np.asarray(self.venv.current_info["target"])  # an acting call: answer this step
            right = (self.rng.random(B) < self.p) & (target >= 0)
            answer = np.where(right, target, (np.maximum(target, 0) + 1) % self.V)
            logits[torch.arange(B), -1, torch.as_tensor(answer)] = 1.0
        else:  # a chunk call
            self.calls += 1
            metrics = {"store_entries": float(self.calls), "write_rate": 0.25}
        return logits + 0 * self.w, state, {"losses": {}, "metrics": metrics}


def record(venv):
    """Wrap venv.reset/step: episodes as [(options, [(info of the step, action, reward), ...]), ...]."""
    episodes, reset, step = [], venv.reset, venv.step

    def on_reset(seed=None, options=None):
        obs, info = reset(seed=seed, options=options)
        venv.current_info = info
        episodes.append((options or {}, []))
        return obs, info

    def on_step(action):
        info = venv.current_info
        obs, reward, term, trunc, venv.current_info = step(action)
        kept = {k: np.asarray(info[k]).copy() for k in ("target", "scored", "distance", "delay", "task_id")}
        episodes[-1][1].append((kept, np.asarray(action).copy(), np.asarray(reward).copy()))
        return obs, reward, term, trunc, venv.current_info

    venv.reset, venv.step = on_reset, on_step
    return episodes


class Scalars:
    def __init__(self):
        self.rows = []

    def scalars(self, values, step):
        self.rows.append((step, dict(values)))

    def flush(self):
        pass


def fit_with_oracle(overrides, tmp_path):
    trainer = Trainer(load_config(overrides), tmp_path)
    episodes = record(trainer.venv)
    model = Oracle(trainer.venv)
    trainer.model = trainer.runner.model = model
    trainer.runner.acting = "step"  # the oracle answers in acting calls (it reads the step's target)
    trainer.state, trainer.lifetimes = model.initial_state(trainer.cfg.train.lanes), None
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer.save = lambda config: None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").touch()
    logger = Scalars()
    reported = []  # what a sweep's trial reports to Tune (agents/tune_trial.py): every evaluation's values
    metrics = run.fit(trainer, logger, {}, progress=False,
                      on_eval=lambda t, values: reported.append((t.train_steps, t.episode, dict(values))))
    logger.reported = reported
    return trainer, metrics, episodes, logger


def recompute(episodes, T):
    """From the record: evaluations (one {task: [correct, scored, {dist: [ok]}, {delay: [ok]}]} each) with the
    training step they followed, and per training episode (end step, accuracy or None, task)."""
    evals, at, train, steps, current = [], [], [], 0, None
    for options, rows in episodes:
        for info, action, reward in rows:  # the env pays exactly the scored correct answers
            assert np.array_equal(reward == 1.0, (action == info["target"]) & info["scored"])
        if options.get("phase") == "eval":
            if current is None:
                current = {}
                evals.append(current)
                at.append(steps)
            c = current.setdefault(options["task_id"], [0, 0, {}, {}])
            for info, action, _ in rows:
                s = info["scored"]
                ok = (action == info["target"]) & s
                c[0], c[1] = c[0] + int(ok.sum()), c[1] + int(s.sum())
                for key, table in (("distance", c[2]), ("delay", c[3])):
                    for k, o in zip(info[key][s], ok[s], strict=True):
                        if k >= 0:
                            table.setdefault(int(k), []).append(bool(o))
        else:
            current, steps = None, steps + len(rows)
            scored = sum(int(i["scored"].sum()) for i, _, _ in rows)
            right = sum(int(((a == i["target"]) & i["scored"]).sum()) for i, a, _ in rows)
            train.append((steps, right / scored if scored else None, int(rows[0][0]["task_id"][0])))
    accs = [[ev[j][0] / ev[j][1] if ev[j][1] else math.nan for j in range(T)] for ev in evals]
    return evals, at, accs, train


def pairs_close(got, want) -> bool:
    """[(step, value or None), ...] equal in steps, values equal up to float rounding."""
    return len(got) == len(want) and all(
        gs == ws and ((gv is None and wv is None) or (gv is not None and wv is not None and math.isclose(gv, wv)))
        for (gs, gv), (ws, wv) in zip(got, want, strict=True))


CS = ["env=ContinualShift-v0", "agent=lstm", "train.lanes=3", "env.kwargs.num_tasks=3", "train.threads=1",
      "env.kwargs.trials_per_episode=6", "env.kwargs.keys_per_task=4", "train.progress=false"]


@pytest.mark.parametrize("extra", [
    ["env.kwargs.episodes_per_task=2", "train.eval_every=1"],
    ["env.kwargs.episodes_per_task=2", "train.eval_every=3", "train.episodes=5"],  # ends mid-task
    ["env.kwargs.episodes_per_task=1", "env.kwargs.revisit=true", "train.eval_every=4", "train.episodes=8"],
    ["env.kwargs.episodes_per_task=1", "train.eval_repeats=2", "train.eval_every=2"],
])
def test_continual_metrics_rebuilt_from_the_env_record(extra, tmp_path):
    trainer, metrics, episodes, logger = fit_with_oracle([*CS, *extra], tmp_path)
    T = trainer.num_tasks
    evals, at, accs, train = recompute(episodes, T)
    assert np.allclose(metrics["untrained_accuracy"], accs[0]) and at[0] == 0
    for j in range(T):
        assert pairs_close(metrics["forgetting_curves"][j], [(s, a[j]) for s, a in zip(at, accs, strict=True)])
    assert metrics["accuracy"] == pytest.approx(np.mean(accs[-1]))
    # R: the evaluation right after each block's last episode (or after the run's last episode)
    ends = [i for i in range(len(train)) if i == len(train) - 1 or train[i + 1][2] != train[i][2]]
    tasks = [train[i][2] for i in ends]
    R = [accs[at.index(train[i][0])] for i in ends]
    assert np.allclose(metrics["accuracy_matrix"][: len(R)], R)
    assert np.isnan(metrics["accuracy_matrix"][len(R):]).all()
    assert metrics["task_boundaries"] == [train[i][0] for i in ends]
    # the cl/* of every evaluation: the blocks finished by then, on the columns of the tasks they trained
    logged = [(s, v) for s, v in logger.rows if "cl/ACC" in v]
    assert [s for s, _ in logged] == at
    # on_eval (a sweep's reports) gets each evaluation's values, the untrained one at episode 0 included (Tune's
    # progress.csv started at the first evaluation after training), and after training the episode's scalars too:
    # those TensorBoard got at the same step (only the evaluation tags reached Tune)
    assert [(s, {k: v[k] for k in e}) for (s, _, v), (_, e) in zip(logger.reported, logged, strict=True)] == logged
    assert logger.reported[0][1] == 0 and not any(k.startswith(("train/", "perf/")) for k in logger.reported[0][2])
    trained = {s: v for s, v in logger.rows if "train/loss" in v}
    for step, _, values in logger.reported[1:]:
        assert {k: v for k, v in values.items() if k in trained[step]} == trained[step]
    for step, values in logged:
        n = sum(1 for i in ends if train[i][0] <= step)
        cols = sorted(set(tasks[:n]))
        want = ref_cl([[r[j] for j in cols] for r in R[:n]], [accs[0][j] for j in cols],
                      [cols.index(t) for t in tasks[:n]]) if n else dict.fromkeys(("ACC", "BWT", "FWT", "forgetting"))
        assert all(values[f"cl/{k}"] == pytest.approx(v) for k, v in want.items()), (step, values, want)
    assert all(metrics[k] == pytest.approx(logged[-1][1][f"cl/{k}"]) for k in ("ACC", "BWT", "FWT", "forgetting"))
    # train/accuracy per training episode, on its scored steps
    assert pairs_close([(s, v["train/accuracy"]) for s, v in logger.rows if "train/loss" in v],
                       [(s, a) for s, a, _ in train])


@pytest.mark.parametrize("overrides", [
    ["env=LongDependency-v0", "env.kwargs.distances=[1,2,3,5,8,9,40]", "env.kwargs.episode_length=160",
     "env.kwargs.queries_per_episode=12", "train.eval_repeats=2"],
    ["env=LongDependency-v0", "env.kwargs.distances=[1,3,9]", "env.kwargs.episode_length=120",
     "env.kwargs.queries_per_episode=8", "env.kwargs.cross_episode_queries=4"],
    ["env=NeedleRecall-v0", "env.kwargs.delay=2", "env.kwargs.haystack_length=24", "env.kwargs.facts_per_episode=2",
     "env.kwargs.train_facts=16", "env.kwargs.fresh_facts=8", "train.eval_repeats=2"],
])
def test_accuracy_by_distance_and_delay_rebuilt_from_the_env_record(overrides, tmp_path):
    trainer, metrics, episodes, logger = fit_with_oracle(
        [*overrides, "agent=lstm", "train.lanes=3", "train.episodes=2", "train.eval_every=1", "train.threads=1",
         "train.progress=false"], tmp_path)
    evals, at, accs, _ = recompute(episodes, 1)
    assert np.allclose(metrics["accuracy_matrix"], [accs[-1]]) and metrics["BWT"] is None
    by_distance, by_delay = {}, {}
    for task in evals[-1].values():  # the final evaluation only
        for table, into in ((task[2], by_distance), (task[3], by_delay)):
            for k, oks in table.items():
                into.setdefault(k, []).extend(oks)
    buckets = {}
    for d, oks in by_distance.items():  # bucket e holds (e/2, e]; bucket 1 also 0
        buckets.setdefault(1 << max(d - 1, 0).bit_length(), []).extend(oks)
    want_d = {e: sum(v) / len(v) for e, v in sorted(buckets.items())} or None
    want_delay = {k: sum(v) / len(v) for k, v in sorted(by_delay.items())} or None
    assert metrics["accuracy_by_distance"] == pytest.approx(want_d)
    assert metrics["recall_by_delay"] == (None if want_delay is None else pytest.approx(want_delay))
    last = logger.rows[-1][1]  # TensorBoard's recall/* of the final evaluation: the same numbers
    assert {int(k[len("recall/accuracy_d"):]): v for k, v in last.items()
            if k[len("recall/accuracy_d"):].isdigit() and v is not None} == pytest.approx(want_d)
    assert {int(k[len("recall/accuracy_delay"):]): v for k, v in last.items()
            if k.startswith("recall/accuracy_delay") and v is not None} == pytest.approx(want_delay or {})


def test_perf_update_ms_counts_only_chunks_that_had_a_loss():
    """A chunk without a scored step has no loss (the learner returns None at once): its time is not an update's,
    so it must not raise perf/update_ms (LongDependency: most chunks score nothing)."""
    venv = make_vector_env("LongDependency-v0", 2, dict(vocab_size=64, distances=[1, 8, 40], queries_per_episode=4,
                                                         episode_length=120))
    record(venv)
    model = Oracle(venv)
    returned = []

    def learner(chunk, logits, aux):
        if not bool(chunk.scored.any()):
            time.sleep(0.02)  # stands for whatever a no-loss chunk costs; it is not an update
            returned.append(None)
            return None
        returned.append(1.0)
        return 1.0

    obs, info = venv.reset(seed=0)
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=8, acting="step")  # the oracle answers when acting
    _, stats = runner.run(model.initial_state(2), obs, info, 0, learner=learner)
    assert returned.count(None) > returned.count(1.0) > 0
    assert stats.milliseconds["update_ms"] < 10
    venv.close()


def test_memory_counts_are_the_episodes_last_value_rates_its_mean():
    """memory/store_entries is a count: TensorBoard gets the count at the episode's end (the x value is that step),
    not its mean over the episode's chunks; rates such as write_rate are averaged over chunks."""
    venv = make_vector_env("ContinualShift-v0", 2, dict(num_tasks=2, episodes_per_task=1, trials_per_episode=20,
                                                         keys_per_task=8, vocab_size=64))
    record(venv)
    model = Oracle(venv)
    obs, info = venv.reset(seed=0)
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=8, acting="step")
    _, stats = runner.run(model.initial_state(2), obs, info, 0, learner=lambda c, lg, aux: None)
    assert stats.chunks == model.calls > 1
    assert stats.memory == {"store_entries": float(model.calls), "write_rate": 0.25}
    venv.close()
