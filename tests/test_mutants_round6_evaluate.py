"""Mutation-testing kills (round 6): what `python -m agents.evaluate` does that no test checked: its command line's
checks (agents/evaluate_args.py), evaluate()'s arguments, result and printed table (agents/evaluate.py), the out=
file (agents/eval_out.py), the run folder's lock (agents/run_lock.py) and the new-folder claim
(agents/new_folders.py)."""

import json
import os

import pytest
import torch

from agents import evaluate, run
from agents.config import ConfigError
from agents.evaluate_args import (
    MAX_EVALUATIONS,
    check_argument,
    check_memory_key,
    early_answer,
    override_grid,
    parse,
    thread_count,
)
from tests.test_run import tiny


def _fake_run(tmp_path):
    """A run folder with a checkpoint file: enough for the checks that read no checkpoint."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    return run_dir


# --- agents/evaluate_args.py ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["checkpoint", "out"])
def test_a_path_of_only_spaces_is_empty(tmp_path, key):
    """checkpoint=' ' / out=' ' are the empty path's line, not a file named ' '."""
    run_dir = _fake_run(tmp_path)
    argv = [f"checkpoint={run_dir}", "out= "] if key == "out" else ["checkpoint= "]
    with pytest.raises(ConfigError, match=rf"^{key}= is empty; "):
        parse(argv)


@pytest.mark.parametrize("key", ["pressure_weight", "sparsity_weight", "util_weight"])
def test_the_learning_only_memory_weights_are_refused_for_an_evaluation(key):
    """They act on learning only: an evaluation given one would change nothing and record it as a change."""
    with pytest.raises(ConfigError, match=rf"^memory\.{key}: the trained weights and saved memory were made"):
        check_memory_key(key)


def test_a_sweep_of_exactly_the_limit_is_taken():
    """MAX_EVALUATIONS evaluations are allowed; one more is refused."""
    grid = override_grid([f"env.kwargs.trials_per_episode=range(0,{MAX_EVALUATIONS})"])
    assert len(grid) == MAX_EVALUATIONS and grid[-1] == ({"trials_per_episode": MAX_EVALUATIONS - 1}, {})
    with pytest.raises(ConfigError, match="evaluations; a sweep runs at most"):
        override_grid([f"env.kwargs.trials_per_episode=range(0,{MAX_EVALUATIONS + 1})"])


@pytest.mark.parametrize("text", ["0", "-1"])
def test_threads_below_one_are_refused_while_the_command_starts(text):
    with pytest.raises(ConfigError, match=rf"^threads={text}: give a torch thread count in \[1, "):
        thread_count(text)


@pytest.mark.parametrize("arg", ["env.kwargs.=1", "memory.=never"])
def test_a_prefix_without_a_key_is_not_an_argument(arg):
    with pytest.raises(ConfigError, match=rf"^'{arg}' is not an argument of agents.evaluate"):
        check_argument(arg)


def test_a_bare_checkpoint_file_name_is_told_to_be_checkpoint_equals(tmp_path, monkeypatch):
    """`python -m agents.evaluate last.pt` (no such file here, no folder in it): the key=value fix, not 'not an
    argument'."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^'last.pt': arguments are key=value; write checkpoint=last.pt"):
        check_argument("last.pt")


def test_a_line_checked_while_starting_is_checked_again_on_a_second_parse(tmp_path, capsys):
    """early_answer's check is taken once by main(); a later parse of the same line checks it afresh."""
    run_dir = _fake_run(tmp_path)
    argv = [f"checkpoint={run_dir}", "out=mine.json"]
    assert early_answer(argv) is None
    assert parse(argv).out_file == run_dir / "mine.json"  # the one made while starting
    (run_dir / "mine.json").write_text("my notes")  # now another file is there
    with pytest.raises(ConfigError, match="exists and is not an earlier evaluation's JSON"):
        parse(argv)


# --- agents/evaluate.py --------------------------------------------------------------------------------------------

def test_evaluate_refuses_a_bool_thread_count(memnet_run):
    """threads=True is no thread count (not taken as 1)."""
    with pytest.raises(ConfigError, match=r"^evaluate: threads=True; pass a torch thread count"):
        evaluate.evaluate(memnet_run, out=None, threads=True, note=False)


def test_a_relative_file_option_is_recorded_as_the_file_it_names_from_here(tmp_path, monkeypatch):
    """env.kwargs.<x>_path relative to where the command ran, as agents.run saves it: the JSON lands in the run
    folder, so it records the absolute path."""
    words = " ".join(["alpha", "beta", "gamma", "delta", "epsilon"] * 400)
    (tmp_path / "hay.txt").write_text(words)
    run_dir = tmp_path / "run"
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, "train.episodes=1",
                         f"env.kwargs.haystack_path={tmp_path / 'hay.txt'}")) == 0
    monkeypatch.chdir(tmp_path)
    result = evaluate.evaluate(run_dir, env_kwargs={"haystack_path": "hay.txt"}, out="eval.json", note=False)
    assert result["env_kwargs"] == {"haystack_path": str(tmp_path / "hay.txt")}
    assert json.loads((run_dir / "eval.json").read_text())["env_kwargs"] == result["env_kwargs"]


def test_an_env_option_that_changes_nothing_is_noted(memnet_run, capsys):
    """The note names env.kwargs.* too, not only memory.*: shift_window with the run's abrupt shift."""
    evaluate.evaluate(memnet_run, env_kwargs={"shift_window": 1}, out=None)
    assert "env.kwargs.shift_window changes nothing with shift=abrupt" in capsys.readouterr().out


def test_a_ragged_accuracy_matrix_has_no_trained_shape():
    """Rows of two lengths are not a plain matrix: the restore names the fault, not the env-shape line."""
    body = {"trainer": {"R": [[0.5, 0.5], [0.5]]}, "model": {"embed.weight": torch.zeros(10, 2)}}
    assert evaluate.trained_shapes(body) is None
    body["trainer"]["R"] = [[0.5, 0.5], [0.5, 0.25]]
    assert evaluate.trained_shapes(body) == (10, (2, 2))


def test_the_table_of_a_run_of_no_episodes_says_episodes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir, "train.episodes=0")) == 0
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0
    assert "ContinualShift-v0 / lstm after 0 episodes" in capsys.readouterr().out


def test_the_table_prints_each_distance_with_its_scored_count(memnet_run, capsys):
    assert evaluate.main([f"checkpoint={memnet_run}", "out=counts.json"]) == 0
    result = json.loads((memnet_run / "counts.json").read_text())
    out = capsys.readouterr().out
    assert result["accuracy_by_distance"]
    for k, v in result["accuracy_by_distance"].items():
        assert f"  distance <= {k}: {v:.3f} (n={result['scored_by_distance'][k]})" in out


def test_evaluate_refuses_an_empty_out_by_name(memnet_run):
    """evaluate(out=""): the empty out= line, not "the run folder is a folder"."""
    with pytest.raises(ConfigError, match=r"^out= is empty; name a file"):
        evaluate.evaluate(memnet_run, out="", note=False)


def test_without_env_options_a_checkpoint_the_env_does_not_fit_is_left_to_the_restore():
    """A sweep over memory.* alone evaluates the run's own env: no env-shape line naming no option."""
    body = {"trainer": {"R": [[0.5, 0.5], [0.5, 0.5]]}, "model": {"embed.weight": torch.zeros(10, 2)},
            "config": {"env": {"kwargs": {"num_tasks": 2}}}}
    evaluate.check_restorable(body, (10, (4, 2)), {})
    with pytest.raises(ConfigError, match=r"^env.kwargs.revisit=true: the run was trained on vocab_size=10 with 2 "):
        evaluate.check_restorable(body, (10, (4, 2)), {"revisit": True})


def test_ctrl_c_during_an_evaluation_exits_130_and_writes_nothing(memnet_run, capsys, monkeypatch):
    from agents.trainer import Trainer

    def stopped(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate_all", stopped)
    assert evaluate.main([f"checkpoint={memnet_run}", "out=stopped.json"]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted; no evaluation was written (the run and its checkpoint "
                                               "are untouched)")
    assert not (memnet_run / "stopped.json").exists()


# --- agents/eval_out.py --------------------------------------------------------------------------------------------

def test_out_may_name_metrics_json_in_a_subfolder_of_the_run(tmp_path):
    """Only the run's own metrics.json and config.yaml (at its top) are the run's files."""
    from agents.eval_out import check_out_file, run_output

    run_dir = _fake_run(tmp_path)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert run_output(run_dir / "evals" / "metrics.json", run_dir, checkpoint) is None
    assert run_output(run_dir / "evals" / "config.yaml", run_dir, checkpoint) is None
    check_out_file("evals/metrics.json", run_dir, checkpoint)
    assert run_output(run_dir / "metrics.json", run_dir, checkpoint) == "the run's metrics.json"


def test_a_large_earlier_sweep_may_be_written_over(tmp_path):
    """An earlier sweep's JSON of a few MB is an earlier evaluation (the bound is 64 MiB)."""
    from agents.eval_out import earlier_evaluation

    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"evaluations": [{"accuracy_by_task": {"0": 0.5}, "pad": "x" * 1000}] * 2000}))
    assert path.stat().st_size > 2**20 and earlier_evaluation(path)
    with open(path, "wb") as f:
        f.truncate(2**26 + 1)  # sparse: its size alone refuses it
    assert not earlier_evaluation(path)  # past the bound: not read


def test_a_quota_exceeded_write_is_the_full_disk_line(tmp_path, monkeypatch):
    import errno

    from agents import report
    from agents.eval_out import write_out_file

    def over_quota(path, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(report, "write_json_atomic", over_quota)
    with pytest.raises(ConfigError, match=r"cannot write it \(Disk quota exceeded; .* free there\); free space, or "
                                          r"name a file on another disk$"):
        write_out_file(tmp_path / "eval.json", {})


# --- agents/run_lock.py --------------------------------------------------------------------------------------------

def test_a_held_lock_with_no_pid_yet_names_the_holder_unknown(tmp_path):
    """Another process holds the lock but has not written its pid yet."""
    import fcntl

    from agents.run_lock import RUN_LOCK, FolderInUse, lock_run

    fd = os.open(tmp_path / RUN_LOCK, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FolderInUse, match=r"in use by another process \(pid unknown\)") as caught:
            lock_run(tmp_path)
        assert caught.value.holder == "unknown"
    finally:
        os.close(fd)


def test_run_locks_hold_a_folder_once_by_any_spelling_and_release_it_on_exit(tmp_path, monkeypatch):
    from agents.run_lock import RunLocks, lock_run

    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    with RunLocks() as locks:
        locks.hold("run")
        locks.hold(tmp_path / "run")  # the same folder again: no second lock (which its own first one would refuse)
        assert locks.holds("run") and locks.holds(tmp_path / "run") and locks.holds("./run/../run")
    assert not locks.holds("run")  # released: held no more
    fd = lock_run(tmp_path / "run")  # and free for another process
    os.close(fd)


# --- agents/new_folders.py -----------------------------------------------------------------------------------------

def test_a_dangling_link_where_a_parent_should_be_is_an_error_not_a_taken_name(tmp_path):
    """mkdir's FileExistsError for a name that does not exist is no taken name: the claim does not go on to the
    next one (it named an endless list of them)."""
    from agents.new_folders import claim_new_folder

    (tmp_path / "runs").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        claim_new_folder(iter([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]))


def test_undoing_a_claim_stops_at_a_folder_that_holds_something(tmp_path):
    from agents.new_folders import remove_made_folders

    made = [tmp_path / "a" / "b", tmp_path / "a"]
    made[0].mkdir(parents=True)
    (made[0] / "result.json").write_text("{}")  # written meanwhile
    remove_made_folders(made)  # no error: each folder is removed only while empty
    assert (made[0] / "result.json").is_file()
