"""What `python -m agents.tune resume=` reads from a sweep folder before Ray starts (agents/tune_saved.py): whether
every planned trial ended (then nothing is resumed and the results are written again), read without Ray's lines on
the terminal."""

from __future__ import annotations

from agents.tune_saved import finished_trials, planned_trials

SMOKE = ["env=ContinualShift-v0", "sweep=smoke"]


def test_a_sweep_with_trials_never_made_is_not_finished(monkeypatch, tmp_path):
    """Tune makes trials as places free up: a sweep stopped between trials (max_concurrent=1) saved only ended
    trials, and resume= said it had finished and never ran the others."""
    from types import SimpleNamespace

    import ray.tune

    from agents.tune_prepare import prepare

    plan, _, _ = prepare(["env=ContinualShift-v0", "sweep=smoke", "sweep.search_space.memory.slots=grid:[2,4,6,8,10]",
                          f"runs_root={tmp_path}"])
    assert planned_trials(plan) == 10  # smoke: 2 samples of the grid, the pressure weight drawn per trial
    saved = []
    monkeypatch.setattr(ray.tune, "ExperimentAnalysis", lambda path: SimpleNamespace(trials=saved))
    for ended in (3, 10):
        saved[:] = [SimpleNamespace(status="TERMINATED")] * ended
        assert (finished_trials(tmp_path, plan) is not None) == (ended == 10)
    saved[-1] = SimpleNamespace(status="ERROR")  # resume= retries a failed trial
    assert finished_trials(tmp_path, plan) is None


def test_resume_reads_the_saved_trials_without_ray_lines_on_the_terminal(monkeypatch, tmp_path, capfd):
    """resume= of a sweep stopped with trials that had not reported yet printed Tune's 3-line warning (`Failed to
    fetch metrics for 2 trial(s): ... FileNotFoundError(...)`) before Ray started: Ray's logger still wrote to the
    terminal then. It goes to the sweep's ray.log, as every other Ray line; the logger is put back after."""
    import logging
    import sys
    from types import SimpleNamespace

    import ray.tune

    from agents.tune_prepare import prepare

    plan, _, _ = prepare([*SMOKE, f"runs_root={tmp_path}"])
    ray_logger = logging.getLogger("ray")
    terminal = logging.StreamHandler(sys.stderr)  # what `import ray` installs (here: whatever an earlier test left)
    monkeypatch.setattr(ray_logger, "handlers", [terminal])

    def analysis(path):
        logging.getLogger("ray.tune.analysis.experiment_analysis").warning("Failed to fetch metrics for 2 trial(s):")
        return SimpleNamespace(trials=[])

    monkeypatch.setattr(ray.tune, "ExperimentAnalysis", analysis)
    assert finished_trials(tmp_path, plan) is None
    assert "Failed to fetch" not in capfd.readouterr().err
    assert "Failed to fetch metrics" in (tmp_path / "ray.log").read_text()
    assert ray_logger.handlers == [terminal]
