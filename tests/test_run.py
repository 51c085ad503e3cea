"""End to end: `python -m agents.run` on every env x agent with a tiny budget, outputs, evaluate, bad input (the
revisit schedule's accuracy matrix: test_run_revisit.py)."""

import json

import numpy as np
import pytest
import torch

from agents import evaluate, run
from agents.checkpoint import load_checkpoint
from agents.tb_logger import read_hparams, read_layout, read_scalars
from tests.repo_env import REPO

# tiny but complete: every env option valid, every memory part on for memnet
TINY_ENVS = {
    "LongDependency-v0": ["env.kwargs.distances=[1,2,4,8,16]", "env.kwargs.queries_per_episode=4",
                          "env.kwargs.episode_length=64", "train.episodes=2"],
    "ContinualShift-v0": ["env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=1",
                          "env.kwargs.trials_per_episode=8", "env.kwargs.keys_per_task=4"],
    "NeedleRecall-v0": ["env.kwargs.delay=1", "env.kwargs.haystack_length=24", "env.kwargs.facts_per_episode=1",
                        "env.kwargs.train_facts=16", "env.kwargs.fresh_facts=8", "train.episodes=2"],
}
TINY_MODEL = ["model.dim=32", "model.layers=1", "model.heads=2", "model.window=16", "train.chunk=8",
              "train.lanes=2", "train.threads=1", "train.progress=false", "memory.slots=8", "memory.read_heads=2",
              "memory.attn_heads=2", "memory.store_capacity=64", "memory.cache_hot=16", "memory.cache_warm=16",
              "memory.cache_cold=64", "memory.bottleneck=8"]


def tiny(env_id, agent, run_dir, *extra):
    """A tiny run's overrides; `extra` replaces a tiny setting of the same key (agents.run takes each key once)."""
    from agents.tune_overrides import merge_overrides

    return merge_overrides([f"env={env_id}", f"agent={agent}", f"run_dir={run_dir}", *TINY_ENVS[env_id], *TINY_MODEL],
                           list(extra))


@pytest.mark.parametrize("agent", ["memnet", "transformer", "lstm", "gru"])
@pytest.mark.parametrize("env_id", list(TINY_ENVS))
def test_every_env_and_agent_runs_end_to_end(env_id, agent, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny(env_id, agent, run_dir)) == 0
    out = capsys.readouterr().out
    assert "ACC" in out and f"run folder: {run_dir}  (tensorboard --logdir {run_dir})" in out  # run_dir= given
    # TINY_MODEL sets memory.* keys for every agent: a baseline says they change nothing (they were silently kept)
    keys = ", ".join(o.split("=")[0] for o in TINY_MODEL if o.startswith("memory."))
    # and the LSTM and GRU, without attention, that its model.window and model.heads do
    unused = ", ".join(k for k in (o.split("=")[0] for o in TINY_MODEL) if k in ("model.window", "model.heads"))
    if agent == "memnet":
        assert "note: agent=" not in out
    else:
        rest = f"; agent={agent} has no attention; {unused} change nothing" if agent in ("lstm", "gru") else ""
        assert f"note: agent={agent} has no memory; {keys} change nothing{rest}\n" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("ACC", "BWT", "FWT", "forgetting", "accuracy_matrix", "accuracy", "accuracy_by_distance",
                "recall_by_delay", "tokens_per_s", "params", "memory_bytes"):
        assert key in metrics  # present; null where it does not apply
    documented = (REPO / "README.md").read_text().split("**What a run writes**", 1)[1].split("**Checkpoints", 1)[0]
    assert [k for k in metrics if f"`{k}`" not in documented] == []  # env, agent, seed, episodes were not named
    T = len(metrics["accuracy_matrix"])
    assert T == (2 if env_id == "ContinualShift-v0" else 1)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["params"] > 0 and metrics["tokens_per_s"] > 0
    if T == 1:
        assert metrics["BWT"] is None and metrics["FWT"] is None and metrics["forgetting"] is None
    else:
        assert metrics["forgetting"] == pytest.approx(-metrics["BWT"])  # T=2: max over l<1 is R[0][0]
    if env_id == "NeedleRecall-v0":
        assert set(metrics["recall_by_delay"]) == {"1"}
    else:
        assert metrics["recall_by_delay"] is None
    for accuracy, steps in (("accuracy_by_distance", "scored_by_distance"), ("recall_by_delay", "scored_by_delay")):
        # the scored steps each accuracy rests on: the same keys, and each accuracy a fraction of its steps
        counts = metrics[steps] or {}
        assert set(counts) == set(metrics[accuracy] or {})
        assert all(n >= 1 and round(metrics[accuracy][k] * n, 6) % 1 == 0 for k, n in counts.items())
    assert metrics["memory_bytes"] > 0  # recurrent state (window cache, hidden state) plus explicit memory
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    for plot in ("forgetting_curves", "accuracy_matrix", "accuracy_vs_distance"):
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
    assert (run_dir / "plots" / "slot_usage.png").exists() == (agent == "memnet")
    if agent == "memnet":  # one usage row per evaluation after the untrained one, at that evaluation's step
        trained = load_checkpoint(run_dir)["trainer"]
        assert trained["usage_steps"] == [step for step, _ in metrics["forgetting_curves"]["0"][1:]]
        assert len(trained["usage_history"]) == len(trained["usage_steps"])
    tags = read_scalars(run_dir)
    for tag in ("train/loss", "train/accuracy", "perf/tokens_per_s", "perf/chunk_forward_ms",
                "perf/update_ms", "cl/ACC", "eval/task_0/accuracy"):
        assert tag in tags, tag
    assert "perf/act_ms" not in tags  # chunk acting (train.acting=auto on these open-loop envs): no acting calls
    assert any(t.startswith("recall/accuracy_d") for t in tags)
    if agent == "memnet":
        assert any(t.startswith("memory/") for t in tags)
    layout = read_layout(run_dir)
    assert any("eval/task_" in str(chart) for chart in layout.values())


def test_continual_shift_matrix_is_filled_and_curves_are_logged(tmp_path):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.eval_every=1")) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    R = np.array(metrics["accuracy_matrix"], dtype=float)
    assert R.shape == (2, 2) and not np.isnan(R).any()
    assert metrics["ACC"] == pytest.approx(R[-1].mean())
    assert metrics["BWT"] == pytest.approx(R[1, 0] - R[0, 0])
    tags = read_scalars(run_dir)
    hparams = read_hparams(run_dir)  # the run's config, its env options too (README, TensorBoard)
    assert hparams["env.kwargs.num_tasks"] == 2 and hparams["env.kwargs.trials_per_episode"] == 8
    assert hparams["model.dim"] == 32 and hparams["agent"] == "transformer"
    # one point before training and one per episode, for each task's forgetting curve
    assert [len(tags[f"eval/task_{j}/accuracy"]) for j in range(2)] == [3, 3]
    # metrics.json's curves (and the plot) hold the same points: one evaluation at step 0, then one per episode
    for j in range(2):
        steps = [step for step, _ in metrics["forgetting_curves"][str(j)]]
        assert len(steps) == 3 and steps[0] == 0 and steps == sorted(set(steps)), steps


def test_evaluate_cli_reevaluates_a_saved_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir)) == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    final = json.loads((run_dir / "metrics.json").read_text())
    # evaluation is deterministic and does not touch weights or memory: the same numbers as the final eval
    assert result["accuracy_by_task"] == pytest.approx({str(j): a for j, a in
                                                        enumerate(final["accuracy_matrix"][-1])})
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert "task 0" in capsys.readouterr().out


def test_eval_repeats_runs_more_complete_evaluations_per_task(tmp_path):
    """train.eval_repeats=3: each evaluation of a task is three complete evaluations (3 x the scored queries)."""
    from agents.trainer import EVAL

    counts = {}
    for repeats in (1, 3):
        run_dir = tmp_path / f"r{repeats}"
        assert run.main(tiny("LongDependency-v0", "transformer", run_dir, f"train.eval_repeats={repeats}")) == 0
        log = load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["reset_log"]
        counts[repeats] = sum(phase == EVAL for phase, _ in log)
    assert counts[1] == 2 and counts[3] == 6  # before training and at the end, one episode per evaluation


@pytest.mark.parametrize("overrides, message", [
    (["foo=1"], "unknown config key 'foo'"),
    (["memory.slots=abc"], "memory.slots"),
    (["env=Nope-v0"], "unknown env 'Nope-v0'"),
    (["agent=cnn"], "unknown agent 'cnn'"),
    (["model.window=0"], "model.window=0"),
    (["memory.slots=-1"], "memory.slots=-1"),
    (["train.eval_repeats=0"], "train.eval_repeats=0"),
    (["train.lr=inf"], "train.lr=inf: must be a finite number"),
    (["memory.context_scale=nan"], "memory.context_scale=nan: must be a finite number"),
    (["seed=-1"], "seed=-1: must be in [0, 2^32)"),
    (["memory.store_capacity=31"], "memory.store_capacity=31: a chunk call writes up to 32 memories"),
    (["memory.store_scope=shared", "memory.store_capacity=100"], "up to 512 memories"),
    (["env.kwargs.num_tasks=0"], "num_tasks"),
    (["resume=/nonexistent/run"], "no checkpoint"),
])
def test_bad_input_exits_with_one_clear_line(overrides, message, capsys):
    assert run.main(overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_damaged_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir)) == 0
    capsys.readouterr()
    ckpt = run_dir / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk
    assert run.main([f"resume={run_dir}"]) == 2
    assert "damaged" in capsys.readouterr().err
    ckpt.write_bytes(good)
    body = torch.load(ckpt, weights_only=True)
    name = next(iter(body["model"]))
    body["model"][name] = torch.zeros(3, 5)  # weights of another architecture under the same config
    torch.save(body, ckpt)
    assert evaluate.main([f"checkpoint={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err
    assert len(err.strip().splitlines()) == 1
    body["version"] = 1  # written before MemNet's store keys changed
    torch.save(body, ckpt)
    assert run.main([f"resume={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "format version 1, this memstream reads version 2; re-run the experiment" in err
    assert len(err.strip().splitlines()) == 1


def test_optimizer_state_of_another_layout_is_one_clear_line(tmp_path, capsys):
    """A checkpoint from before weight decay skipped biases and norms holds one parameter group; a run with
    train.weight_decay > 0 now has two. Resuming it says so in one line instead of torch's traceback."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.weight_decay=0.01")) == 0
    capsys.readouterr()
    ckpt = run_dir / "checkpoints" / "last.pt"
    body = torch.load(ckpt, weights_only=True)
    assert len(body["optimizer"]["param_groups"]) == 2
    first, second = body["optimizer"]["param_groups"]
    body["optimizer"]["param_groups"] = [{**first, "params": first["params"] + second["params"]}]
    torch.save(body, ckpt)
    assert run.main([f"resume={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "its optimizer state does not fit this run's optimizer" in err and len(err.strip().splitlines()) == 1


def test_runtime_memory_keys_may_change_between_save_and_load_but_shapes_may_not():
    from agents.checkpoint import CheckpointError, check_compatible

    saved = {"model": {"dim": 32}, "memory": {"slots": 8, "store_replace": 0.9, "util_weight": 0.0}}
    check_compatible(saved, {"model": {"dim": 32}, "memory": {"slots": 8, "store_replace": 0.0, "util_weight": 1.0}},
                     "x.pt")
    with pytest.raises(CheckpointError, match="memory.slots: 8 vs 16"):
        check_compatible(saved, {"model": {"dim": 32}, "memory": {"slots": 16, "store_replace": 0.9}}, "x.pt")


def test_bf16_autocast_trains_end_to_end_with_float32_weights(tmp_path):
    """train.amp=true: acting and learning under bf16 autocast, the fused AdamW updating float32 weights."""
    from agents.memnet import MemNet

    run_dir = tmp_path / "run"
    dtypes, forward = set(), MemNet.forward

    def recording_forward(self, *args, **kwargs):  # the head's output dtype in every call with a read
        if not getattr(self, "_dtype_hook", False):
            self.head.register_forward_hook(lambda m, i, out: dtypes.add((torch.is_grad_enabled(), out.dtype)))
            self._dtype_hook = True
        return forward(self, *args, **kwargs)

    MemNet.forward = recording_forward
    try:
        assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.amp=true")) == 0
    finally:
        MemNet.forward = forward
    # the head runs in bf16 when acting and evaluating (no gradient) and when learning (the copy read-out then
    # mixes in float32, so the returned logits are float32 either way)
    assert dtypes == {(False, torch.bfloat16), (True, torch.bfloat16)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ACC"] is not None and 0.0 <= metrics["ACC"] <= 1.0
    weights = load_checkpoint(run_dir)["model"]
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_the_tensorboard_command_it_prints_is_one_shell_word_per_path(tmp_path, capsys):
    """The closing line's `tensorboard --logdir ...` is a command to paste: a folder with a space was printed bare
    and pasted as two arguments. Also the line of a finished run started again."""
    run_dir = tmp_path / "my runs" / "a"
    for argv in (tiny("ContinualShift-v0", "transformer", run_dir), [f"resume={run_dir}"]):  # resumed when
        assert run.main(argv) == 0  # finished: "this run is finished", its own closing line
        assert capsys.readouterr().out.rstrip().endswith(f"(tensorboard --logdir '{run_dir}')")


def test_a_run_inside_its_runs_root_is_shown_with_all_of_them(tmp_path, capsys):
    """run_dir= inside runs_root and resume= suggested `tensorboard --logdir <the run folder>`, whose HParams tab shows
    no metric values (TensorBoard looks a lone run's up under "./."); a new run suggested runs_root. Now they do too;
    a run folder elsewhere is still shown alone (test_every_env_and_agent_runs_end_to_end): its parent may hold
    anything."""
    root = tmp_path / "my runs"
    run_dir = root / "ContinualShift-v0" / "mine"
    for argv in (tiny("ContinualShift-v0", "gru", run_dir, f"runs_root={root}"), [f"resume={run_dir}"]):
        assert run.main(argv) == 0  # the second: "this run is finished", its own closing line
        assert capsys.readouterr().out.rstrip().endswith(f"run folder: {run_dir}  (tensorboard --logdir '{root}')")
