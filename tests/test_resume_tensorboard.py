"""A resumed run writes its report's TensorBoard images (accuracy matrix, slot usage, slot survival) and hparams
once: not again when the run had finished (or had written them before it was stopped), and at its end when it was
stopped before. Counted as TensorBoard reads a run folder: every event file, in order, with a resumed run's purge of
the points after its checkpoint applied (its data provider's EventAccumulator)."""

import json

import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator

from agents import report, run
from agents.checkpoint import load_checkpoint
from agents.report import summary_table
from agents.tb_logger import TBLogger, read_hparams, read_scalars
from agents.trainer import Trainer
from tests.test_run import tiny

IMAGES = ("plots/accuracy_matrix", "plots/slot_usage", "plots/slot_survival")  # memnet's
HPARAMS = ("_hparams_/session_start_info", "_hparams_/session_end_info")


def report_summaries(run_dir) -> dict[str, list[int]]:
    """{tag: [step of each summary]} of the run folder's images and hparams."""
    accumulator = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = [tag for plugin in ("images", "hparams") if plugin in accumulator.ActivePlugins()
            for tag in accumulator.PluginTagToContent(plugin)]
    return {tag: [event.step for event in accumulator.Tensors(tag)] for tag in tags}


def stop(monkeypatch, cls, name: str, calls: int, flush: bool = False) -> None:
    """Ctrl+C (a KeyboardInterrupt) at the `calls`-th call of cls.name; `flush`: what the TensorBoard writer had
    queued by then is on disk (it reaches the file on its own, e.g. as the process ends)."""
    real, seen = getattr(cls, name), []

    def interrupted(self, *args, **kwargs):
        seen.append(1)
        if len(seen) == calls:
            if flush:
                self.flush()
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, interrupted)


def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["finished", "stopped-in-training", "stopped-before-hparams", "stopped-after-hparams"])
def test_a_resumed_run_writes_its_report_images_and_hparams_once(tmp_path, monkeypatch, capsys, how):
    """A finished run resumed (its last checkpoint is its end) wrote every image and the hparams a second time at
    the last step, so TensorBoard showed each image twice; a run stopped while writing them (before its hparams)
    doubled the images it had written. A run stopped in training has none until its resumed end. One stopped after
    its hparams, before metrics.json, writes its report again but keeps its first hparams record."""
    run_dir = tmp_path / "run"
    args = tiny("ContinualShift-v0", "memnet", run_dir, "train.checkpoint_every=1")
    if how == "finished":
        assert run.main(args) == 0
    else:
        if how == "stopped-in-training":
            stop(monkeypatch, Trainer, "train_episode", calls=2)  # after the first episode's checkpoint
        elif how == "stopped-before-hparams":
            stop(monkeypatch, TBLogger, "hparams", calls=1, flush=True)  # the images are written by then
        else:  # images and hparams on disk, metrics.json not yet: the resumed run writes its report, hparams kept
            monkeypatch.setattr(report, "write_json_atomic", ctrl_c)
        assert run.main(args) == 130
        monkeypatch.undo()
    end = load_checkpoint(run_dir)["trainer"]["train_steps"]  # the last checkpoint's step
    written = {"finished": IMAGES + HPARAMS, "stopped-in-training": (), "stopped-before-hparams": IMAGES,
               "stopped-after-hparams": IMAGES + HPARAMS}[how]
    assert report_summaries(run_dir) == {tag: [end] for tag in written}

    for _ in range(2 if how == "finished" else 1):  # a second resume of the finished run: still once
        capsys.readouterr()
        assert run.main([f"resume={run_dir}"]) == 0
        end = load_checkpoint(run_dir)["trainer"]["train_steps"]
        assert report_summaries(run_dir) == {tag: [end] for tag in IMAGES + HPARAMS}
        # a run stopped while writing its report says why it trains nothing (a stopped one trains on without the
        # note; a finished one writes nothing: test_a_finished_run_resumed_prints_its_summary_and_writes_nothing)
        note = "note: this run had trained all its 2 episodes but was stopped while writing its report; nothing is"
        out = capsys.readouterr().out
        assert (note in out) == (how in ("stopped-before-hparams", "stopped-after-hparams"))
        assert ("this run is finished" in out) == (how == "finished")
    assert read_hparams(run_dir)["memory.slots"] == 8


def test_a_finished_run_resumed_prints_its_summary_and_writes_nothing(tmp_path, capsys):
    """Each resume= of a finished run wrote its report again (metrics.json, plots, config.yaml) and a new TensorBoard
    event file (~600 bytes each time) holding nothing new; now it says so, prints the summary from metrics.json
    and exits 0."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("LongDependency-v0", "gru", run_dir)) == 0
    capsys.readouterr()

    def files():  # (but the lock, which every command holding the folder writes its pid into)
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")
                if p.is_file() and p.name != ".run.lock"}

    before = files()
    for _ in range(2):
        assert run.main([f"resume={run_dir}"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("this run is finished: it trained all its 2 episodes and wrote its report; nothing to "
                              "do (its summary, from metrics.json:)\n")
        assert summary_table(json.loads((run_dir / "metrics.json").read_text())) in out
        assert out.rstrip().endswith(f"run folder: {run_dir}  (tensorboard --logdir {run_dir})")
        assert files() == before


def test_a_finished_one_episode_run_says_its_1_episode(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("LongDependency-v0", "gru", run_dir, "train.episodes=1")) == 0
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 0
    assert capsys.readouterr().out.startswith("this run is finished: it trained its 1 episode and wrote its report")


@pytest.mark.parametrize("missing", ["accuracy_vs_distance", "slot_survival"])
def test_an_older_versions_run_stopped_after_its_metrics_json_writes_its_report_on_resume(tmp_path, capsys, missing):
    """Versions before 2026-12-02 wrote metrics.json first, then the plots: such a run stopped while writing its
    report was taken for a finished one ("this run is finished ... wrote its report") and its plots stayed missing."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("LongDependency-v0", "memnet", run_dir)) == 0
    (run_dir / "plots" / f"{missing}.png").unlink()  # (the state such a run left)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 0
    out = capsys.readouterr().out
    assert "but was stopped while writing its report" in out and "this run is finished" not in out
    assert (run_dir / "plots" / f"{missing}.png").is_file()
    assert run.main([f"resume={run_dir}"]) == 0  # whole now
    assert capsys.readouterr().out.startswith("this run is finished")


def test_a_resumed_run_reads_back_without_tensorboards_restart_warning(tmp_path, monkeypatch, caplog):
    """A run stopped after points past its last checkpoint: those points are dropped on reading (the resumed run's
    purge_step), which TensorBoard's reader announced on every load as a warning meant for crashed TensorFlow jobs
    ("Detected out of order event.step likely caused by a TensorFlow restart. Purging ...")."""
    run_dir = tmp_path / "run"
    stop(monkeypatch, Trainer, "train_episode", calls=4)  # episodes 1-3 done, the checkpoint of episode 2
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "env.kwargs.episodes_per_task=2",
                         "train.checkpoint_every=2", "train.eval_every=1")) == 130
    monkeypatch.undo()
    killed = read_scalars(run_dir)["eval/accuracy"]
    assert run.main([f"resume={run_dir}"]) == 0
    with caplog.at_level("WARNING"):
        resumed = read_scalars(run_dir)["eval/accuracy"]
    assert not [r for r in caplog.records if "out of order" in r.getMessage()], caplog.text
    steps = [step for step, _ in resumed]
    assert len(killed) == 4 and len(resumed) == 5 and steps == sorted(steps)  # episode 3's point once, then 4's
