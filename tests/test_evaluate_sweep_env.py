"""`python -m agents.evaluate` sweeps over env options: a value the checkpoint cannot be restored on is refused before
any evaluation runs, and one it can is evaluated even where the run's own env can no longer be made."""

import json

import pytest

from agents import evaluate, run
from tests.test_evaluate_cli import _files, refused
from tests.test_run import tiny


@pytest.mark.parametrize("sweep, message", [
    (["env.kwargs.vocab_size=256,300"], "env.kwargs.vocab_size=300: the run was trained on vocab_size=256 with 2 "
     "training block(s) of 2 task(s), this env has vocab_size=300 and 2 of 2"),
    (["env.kwargs.num_tasks=2,3"], "env.kwargs.num_tasks=3: the run was trained on vocab_size=256 with 2 training "
     "block(s) of 2 task(s), this env has vocab_size=256 and 3 of 3"),
    (["env.kwargs.revisit=false,true"], "env.kwargs.revisit=true: the run was trained on vocab_size=256 with 2 "
     "training block(s) of 2 task(s), this env has vocab_size=256 and 4 of 2")])
def test_a_sweep_value_the_checkpoint_cannot_be_restored_on_is_refused_before_any_evaluation(
        memnet_run, capsys, monkeypatch, sweep, message):
    """The restore refused vocab_size=300 (its weights) or num_tasks=3 (its accuracy matrix) only once the sweep's
    earlier evaluations had run, and their results were lost with the one line."""
    def ran(*args, **kwargs):
        raise AssertionError("an evaluation ran before the sweep's last value was refused")

    monkeypatch.setattr(evaluate, "evaluate", ran)
    files = _files(memnet_run)
    assert evaluate.main([f"checkpoint={memnet_run}", "out=sweep_refused.json", *sweep]) == 2
    refused(capsys, message)
    assert _files(memnet_run) == files


RESTORE_REFUSED = ("the run was trained on vocab_size=256 with 2 training block(s) of 2 task(s), this env has "
                   "vocab_size={}; its weights and accuracy matrix cannot be restored on it: keep vocab_size and the "
                   "task schedule (num_tasks, revisit), as the run's {}")


@pytest.mark.parametrize("option, here, own", [
    ("env.kwargs.num_tasks=3", "256 and 3 of 3", "env.kwargs.num_tasks=2"),
    ("env.kwargs.vocab_size=300", "300 and 2 of 2", "env.kwargs.vocab_size=256"),
    ("env.kwargs.revisit=true", "256 and 4 of 2", "env.kwargs.revisit=false")])
def test_one_env_value_the_checkpoint_cannot_be_restored_on_gets_the_sweeps_line(memnet_run, capsys, option, here,
                                                                                  own):
    """A single value (no sweep, so no check_sweep) got the restore's line: 'its accuracy matrix has shape (2, 2),
    this run's schedule needs (3, 3)' (num_tasks, revisit) or the model's size mismatch (vocab_size), naming neither
    the option nor the run's own value of it."""
    files = _files(memnet_run)
    assert evaluate.main([f"checkpoint={memnet_run}", "out=one_refused.json", option]) == 2
    refused(capsys, f"{option}: " + RESTORE_REFUSED.format(here, own))
    assert _files(memnet_run) == files


def test_a_sweep_over_haystack_files_runs_when_the_runs_own_file_is_gone(tmp_path, capsys):
    """check_sweep made the run's own env again to learn its vocab and schedule: with its haystack file moved, the
    sweep over copies (the fix check_env_files names) was refused on the old path, which it did not use."""
    words = " ".join(["alpha", "beta", "gamma", "delta", "epsilon"] * 400)
    trained, copy, other = tmp_path / "trained.txt", tmp_path / "copy.txt", tmp_path / "other.txt"
    trained.write_text(words)
    copy.write_text(words)
    other.write_text(words[::-1])
    run_dir = tmp_path / "run"
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, "train.episodes=1",
                         f"env.kwargs.haystack_path={trained}")) == 0
    trained.unlink()
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={run_dir}", f"env.kwargs.haystack_path={copy},{other}",
                          "out=sweep.json"]) == 0, capsys.readouterr().err
    assert len(json.loads((run_dir / "sweep.json").read_text())["evaluations"]) == 2
