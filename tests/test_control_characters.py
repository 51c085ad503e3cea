"""An argument holding a newline (or another character that does not print as itself) is echoed escaped, so the
`error:` line stays one line; a path holding one is refused before anything is made."""

import pytest

from agents import benchmark, evaluate, run, tune
from agents.config import ConfigError, load_config
from agents.config_messages import error_line, printable
from tests.test_run import tiny


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("control") / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    return run_dir


def test_printable_escapes_what_does_not_print_and_keeps_the_rest():
    assert printable("a\nb\tc\x1b[31m\udcff\u2028 é'") == "a\\nb\\tc\\x1b[31m\\udcff\\u2028 é'"
    assert error_line(ConfigError("x=a\nb: no")) == "error: x=a\\nb: no"


@pytest.mark.parametrize("entry, argv, echoed", [
    (run, ["config=/nowhere/x\ny"], "config=/nowhere/x\\ny: no such file"),  # echoed as given, unquoted
    (tune, ["env=ContinualShift-v0", "sweep=smoke", "sweep.search_space.train.lr=grid:[a\nb]"], "grid:[a\\nb]"),
    (evaluate, ["checkpoint=<run>", "threads=a\nb"], "threads=a\\nb: not an integer"),
    (benchmark, ["agents=a\nb"], "agents=a\\nb: a\\nb is not in the suite"),
])
def test_every_entry_point_keeps_an_argument_with_a_newline_on_one_line(entry, argv, echoed, finished_run, capsys):
    argv = [a.replace("<run>", str(finished_run)) for a in argv]
    capsys.readouterr()
    assert entry.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert echoed in err


def test_a_value_with_a_newline_keeps_its_reason_and_fix():
    """OmegaConf's refusal was split at every newline: `train.lr: Value 'ab` was the whole line."""
    with pytest.raises(ConfigError) as refused:
        load_config(["train.lr='ab\nc'"])
    assert printable(str(refused.value)) == "train.lr: 'ab\\nc' is not a number; give one, e.g. train.lr=0.003"


def test_a_path_with_a_control_character_is_refused_before_anything_is_made(finished_run, tmp_path, capsys):
    """A run_dir or runs_root with a newline made its folder, then printed `run folder:` and the TensorBoard command
    over two lines; agents.benchmark and agents.evaluate took such an out= too."""
    def why(char):
        return f"it holds the character {char!r}, which no one-line message or printed command can show"

    for key in ("runs_root", "run_dir"):
        # quoted or not: unquoted, Hydra's grammar refused it first, and the line said to quote it
        for value in (f"'{tmp_path / 'a'}\nb'", f"{tmp_path / 'a'}\nb"):
            assert run.main([f"{key}={value}", "train.episodes=0"]) == 2
            err = capsys.readouterr().err  # (the path is shortened to its first 60 characters)
            assert err.startswith(f"error: {key}=") and err.endswith(f": {why(chr(10))}; choose another\n"), err
    assert benchmark.main([f"out={tmp_path / 'o'}\nx"]) == 2
    assert capsys.readouterr().err.endswith(f": {why(chr(10))}; choose another folder\n")
    assert evaluate.main([f"checkpoint={finished_run}", f"out={tmp_path / 'e'}\t.json"]) == 2
    assert capsys.readouterr().err.endswith(f": {why(chr(9))}; name another file\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override", ["seed=\n", "hydra.x='a\nb'", "env.id='a\nb'", "seed=[1,'\n']"])
def test_a_refusal_is_one_line_before_it_is_printed(override):
    """The message itself is one line, not only the `error:` line: `seed=<newline>` echoed the item raw (found by
    hypothesis in CI), and so did the hydra.*, env.id= and list-for-one-value refusals."""
    with pytest.raises(ConfigError) as refused:
        load_config([override])
    assert "\n" not in str(refused.value) and "\\n" in str(refused.value), str(refused.value)


def test_a_checkpoint_refusal_is_one_line_before_it_is_printed():
    from agents.checkpoint_paths import CheckpointError

    assert str(CheckpointError("resume=/a\nb: no such folder")) == "resume=/a\\nb: no such folder"
