"""A run stopped after a *later* checkpoint (past evaluations, a task boundary, slot-usage snapshots, recall
delays) resumes to the same state as an uninterrupted run.

test_resume.py kills a subprocess as soon as its first checkpoint exists, so it resumes from episode 1: before
any evaluation or task boundary, where curves, last_eval, task_boundaries, usage_history, usage_steps and
by_delay are still empty and not restoring them changes nothing. Here the run is stopped in-process (Ctrl+C
right after the checkpoint of a chosen episode) and resumed with `resume=`.
"""

import json

import pytest
import torch

from agents import run
from agents.tb_logger import read_scalars
from agents.trainer import Trainer
from agents.tune_overrides import merge_overrides
from tests.test_resume import assert_same
from tests.test_run import TINY_ENVS, TINY_MODEL

CASES = {  # overrides, the episode after whose checkpoint the run is stopped
    # 2 tasks x 3 episodes, 5 trained: evaluations at 2, 3 (boundary: R row 0), 4, 5; slot usage
    "continual-shift": (["env=ContinualShift-v0", "env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=3",
                         "env.kwargs.trials_per_episode=8", "env.kwargs.keys_per_task=4", "train.eval_every=2",
                         "train.episodes=5"], 4),
    # write, recall, write, recall: the evaluations after episodes 2 and 3 count recalls by delay (by_delay)
    "needle-recall": (["env=NeedleRecall-v0", *TINY_ENVS["NeedleRecall-v0"], "train.episodes=4",
                       "train.eval_every=1"], 3),
}
COMPARED = ("episode", "lane_steps", "train_steps", "train_tokens", "reward_baseline", "reset_log", "R", "b",
            "task_boundaries", "curves", "last_eval", "usage_history", "usage_steps", "total_episodes",
            "by_distance", "by_delay", "slot_lifetimes")


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_stopped_after_a_later_checkpoint_resumes_to_the_same_state(tmp_path, monkeypatch, case):
    extra, stop_after = CASES[case]
    overrides = merge_overrides(["agent=memnet", "seed=3", *TINY_MODEL, "train.checkpoint_every=1"], extra)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run.main([*overrides, f"run_dir={straight}"]) == 0

    save = Trainer.save

    def save_then_interrupt(self, config):  # Ctrl+C just after the chosen checkpoint is on disk
        path = save(self, config)
        if self.episode == stop_after:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Trainer, "save", save_then_interrupt)
    assert run.main([*overrides, f"run_dir={stopped}"]) == 130
    monkeypatch.undo()
    ckpt = stopped / "checkpoints" / "last.pt"
    saved = torch.load(ckpt, weights_only=True)["trainer"]
    assert saved["episode"] == stop_after
    # the checkpoint holds what this test is about: evaluations, usage snapshots, delays or a boundary
    assert saved["last_eval"] and saved["usage_history"] and len(saved["usage_steps"]) == len(saved["usage_history"])
    assert saved["task_boundaries"] if case == "continual-shift" else any(saved["by_delay"]["total"])
    assert run.main([f"resume={stopped}"]) == 0

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["trainer"]["episode"] == b["trainer"]["episode"] == a["trainer"]["total_episodes"]
    for section in ("model", "optimizer", "state", "memory", "rng"):
        assert_same(a[section], b[section], section)
    for key in COMPARED:
        assert_same(a["trainer"][key], b["trainer"][key], f"trainer.{key}")

    # a finished run resumed again trains and evaluates nothing: its report (accuracy by distance and by delay
    # included, which each evaluation recounts) comes from the checkpoint alone
    (stopped / "metrics.json").unlink()
    assert run.main([f"resume={stopped}"]) == 0
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, stopped))
    for m in (ma, mb):
        m.pop("tokens_per_s")
    assert ma["accuracy_by_distance"] and (ma["recall_by_delay"] or case == "continual-shift")
    assert ma == mb
    # TensorBoard's recall points of the final evaluation are the report's (README "TensorBoard":
    # recall/accuracy_d<bucket>, recall/accuracy_delay<k>; a bucket an earlier evaluation filled keeps its curve)
    scalars = read_scalars(straight)
    final = scalars["eval/accuracy"][-1][0]
    for name, prefix in (("accuracy_by_distance", "recall/accuracy_d"), ("recall_by_delay", "recall/accuracy_delay")):
        want = {f"{prefix}{k}": v for k, v in (ma[name] or {}).items() if v is not None}
        got = {t: v for t, points in scalars.items() if t.startswith(prefix) and t[len(prefix)].isdigit()
               for step, v in points if step == final}
        assert got == pytest.approx(want), name  # (empty both only for ContinualShift's delays: checked above)
