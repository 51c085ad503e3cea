"""A checkpoint whose trainer fields (`Trainer.trainer_state`) load but are garbled is the one line that names the
field, for `agents.run resume=` and `agents.evaluate checkpoint=`, exit code 2, and the run folder untouched (a
garbled `curves` ended in `KeyError: 1`, a negative `episode` in FaissStore's 40-line traceback, a string `episode`
in `'<' not supported between 'str' and 'int'`)."""

import copy
import shutil
from pathlib import Path

import pytest
import torch

from agents import evaluate, run
from tests.test_run import tiny

LINE = "does not hold what this memstream saves"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished MemNet run (slot bank: usage rows and slot lifetimes too) and its checkpoint's body."""
    run_dir = tmp_path_factory.mktemp("checkpoint_fields") / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    return run_dir, torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _set(field, value):
    def damage(tr):
        tr[field] = value
    return damage


def _item(field, key, value):
    def damage(tr):
        tr[field][key] = value
    return damage


def _drop(field):
    def damage(tr):
        del tr[field]
    return damage


def _cell(tr):
    tr["R"][0][1] = 1.5


def _lifetimes(key, value):
    def damage(tr):
        tr["slot_lifetimes"][key] = value(tr["slot_lifetimes"][key]) if callable(value) else value
    return damage


# case -> (how the trainer fields are garbled, what the line names)
CASES = {
    "curves a string": (_set("curves", {"0": "x"}), "trainer.curves:"),
    "curves a list": (_set("curves", [[0, 0.5]]), "trainer.curves:"),
    "curve of a task not a pair": (_item("curves", "1", [[0, "x"]]), "trainer.curves[1]:"),
    "curve with a negative step": (_item("curves", "0", [[-3, 0.5]]), "trainer.curves[0]:"),
    "curve step past train_steps": (_item("curves", "0", [[10**9, 0.5]]), "trainer.curves[0]:"),
    "curve accuracy above 1": (_item("curves", "0", [[0, 1.5]]), "trainer.curves[0]:"),
    "episode negative": (_set("episode", -5), "trainer.episode:"),
    "episode a string": (_set("episode", "abc"), "trainer.episode:"),
    "episode a float": (_set("episode", 1.0), "trainer.episode:"),
    "episode a bool": (_set("episode", True), "trainer.episode:"),
    "episode past total": (_set("episode", 3), "trainer.episode: 3, more than its total_episodes 1"),
    "episode not its reset_log's": (_set("episode", 0), "trainer.episode:"),
    "lane_steps negative": (_set("lane_steps", -1), "trainer.lane_steps:"),
    "train_steps a float": (_set("train_steps", 2.5), "trainer.train_steps:"),
    "train_tokens None": (_set("train_tokens", None), "trainer.train_tokens:"),
    "total_episodes negative": (_set("total_episodes", -1), "trainer.total_episodes:"),
    "train_seconds NaN": (_set("train_seconds", float("nan")), "trainer.train_seconds:"),
    "train_seconds a string": (_set("train_seconds", "x"), "trainer.train_seconds:"),
    "reward_baseline infinite": (_set("reward_baseline", float("inf")), "trainer.reward_baseline:"),
    "reset_log a string": (_set("reset_log", "x"), "trainer.reset_log:"),
    "reset_log task out of range": (_set("reset_log", [[0, 7]]), "trainer.reset_log:"),
    "reset_log task one past the last": (_set("reset_log", [[0, 2]]), "trainer.reset_log: holds [0, 2]"),
    "reset_log unknown phase": (_set("reset_log", [[2, 0]]), "trainer.reset_log:"),
    "reset_log not pairs": (_set("reset_log", [[0]]), "trainer.reset_log:"),
    "R a string": (_set("R", "x"), "trainer.R:"),
    "R ragged": (_set("R", [[0.1], [0.2, 0.3]]), "trainer.R:"),
    "R accuracy above 1": (_cell, "trainer.R:"),
    "b too short": (_set("b", [0.1]), "trainer.b:"),
    "b strings": (_set("b", ["a", "b"]), "trainer.b:"),
    "task_boundaries negative": (_set("task_boundaries", [-1]), "trainer.task_boundaries:"),
    "task_boundaries past train_steps": (_set("task_boundaries", [10**9]), "trainer.task_boundaries:"),
    "task_boundaries a string": (_set("task_boundaries", "x"), "trainer.task_boundaries:"),
    "last_eval accuracy above 1": (_item("last_eval", "0", 2.0), "trainer.last_eval[0]:"),
    "last_eval another task": (_set("last_eval", {"5": 0.1}), "trainer.last_eval:"),
    "usage row of another size": (_set("usage_history", [[1.0]]), "trainer.usage_history:"),
    "usage_history a string": (_set("usage_history", "x"), "trainer.usage_history:"),
    "usage_steps not its rows'": (_set("usage_steps", [1, 2]), "trainer.usage_steps:"),
    "by_distance lacks counts": (_set("by_distance", {"edges": [1]}), "trainer.by_distance:"),
    "by_distance correct above total": (_item("by_distance", "correct", [9, 0, 0, 0, 99, 0]),
                                        "trainer.by_distance:"),
    "by_delay string keys": (_set("by_delay", {"edges": None, "keys": ["a"], "correct": [0], "total": [1]}),
                             "trainer.by_delay.keys:"),
    "slot_lifetimes a string": (_set("slot_lifetimes", "x"), "trainer.slot_lifetimes:"),
    "slot_lifetimes negative step": (_lifetimes("step", -1), "trainer.slot_lifetimes.step:"),
    "slot_lifetimes born of another shape": (_lifetimes("born", lambda t: t[:1]), "trainer.slot_lifetimes.born:"),
    "slot_lifetimes born floats": (_lifetimes("born", lambda t: t.float()), "trainer.slot_lifetimes.born:"),
    "slot_lifetimes negative counts": (_lifetimes("done_counts", lambda t: -t), "trainer.slot_lifetimes.done_counts:"),
    "R missing": (_drop("R"), "no trainer.R"),
    "curves missing": (_drop("curves"), "no trainer.curves"),
}


def garbled_copy(finished, where: Path, damage, part: str | None = "trainer") -> Path:
    """A copy of the finished run whose checkpoint `damage` edited: its `part` (None: the whole body)."""
    run_dir, body = finished
    copied = where / "run"
    shutil.copytree(run_dir, copied)
    body = copy.deepcopy(body)
    damage(body[part] if part else body)
    torch.save(body, copied / "checkpoints" / "last.pt")
    return copied


def refused_by_both_commands(capsys, run_dir: Path, *parts: str) -> None:
    """resume= and agents.evaluate of `run_dir` each exit 2 with one line holding `parts`, and write nothing (no
    config.yaml, no tensorboard events, no report)."""
    before = snapshot(run_dir)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 2
    one_line(capsys, *parts, "re-run the experiment", str(run_dir))
    assert evaluate.main([f"checkpoint={run_dir}"]) == 2
    one_line(capsys, *parts, "re-run the experiment", str(run_dir))
    assert snapshot(run_dir) == before


def snapshot(run_dir: Path) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def one_line(capsys, *parts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(p in err for p in parts), err
    return err


@pytest.mark.parametrize("case", list(CASES))
def test_a_garbled_trainer_field_is_one_line_naming_it(finished, tmp_path, capsys, case):
    damage, names = CASES[case]
    refused_by_both_commands(capsys, garbled_copy(finished, tmp_path, damage), LINE, names)


def test_a_whole_trainer_section_that_is_not_a_mapping_is_one_line(finished, tmp_path, capsys):
    run_dir, body = finished
    copied = tmp_path / "run"
    shutil.copytree(run_dir, copied)
    torch.save({**body, "trainer": "x"}, copied / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert run.main([f"resume={copied}"]) == 2
    one_line(capsys, LINE, "trainer: 'x', not a mapping")
    assert evaluate.main([f"checkpoint={copied}"]) == 2
    one_line(capsys, LINE, "trainer: 'x', not a mapping")


def test_resume_refuses_distance_counts_bucketed_by_another_env(finished, tmp_path, capsys):
    """Resume loads the accuracy-by-distance counts, so their edges must be this env's; evaluate recomputes them
    (its env options may bucket distances differently), so it does not read them."""
    edges = [1, 2, 4]
    run_dir = garbled_copy(finished, tmp_path, _set("by_distance", {"edges": edges, "keys": edges,
                                                                    "correct": [0, 0, 0], "total": [0, 0, 0]}))
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 2
    # an older memstream's checkpoint looks so too (ContinualShift's buckets grew on 2026-12-01): the line says what
    # differs and the three ways on, not "damaged"
    one_line(capsys, "buckets accuracy by distance up to 4 steps, this memstream up to 64 for this run",
             "resume it with the memstream that wrote it, re-evaluate it with agents.evaluate, or start a new run")
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0


def test_resume_refuses_distance_counts_without_edges(finished, tmp_path, capsys):
    """Counts kept by key with no edges (by_delay's kind) are not this env's buckets: resume refuses them (they
    passed the edge comparison above, which looks at a list of edges only); evaluate recomputes them."""
    run_dir = garbled_copy(finished, tmp_path, _set("by_distance", {"edges": None, "keys": [], "correct": [],
                                                                    "total": []}))
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 2
    one_line(capsys, LINE, "trainer.by_distance.edges: None, this env buckets by [1, 2, 4, 8, 16, 32, 64]")
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0


def test_a_good_checkpoint_still_resumes_and_evaluates(finished, tmp_path, capsys):
    run_dir = garbled_copy(finished, tmp_path, lambda tr: None)
    assert run.main([f"resume={run_dir}"]) == 0
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0
    assert capsys.readouterr().err.strip() == ""
