"""Found by a command-line audit, 2026-12-03: valid command lines that were refused, and bad ones whose line was not
the entry point's own."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from agents import run
from agents.config import ConfigError, load_config
from memory.attention import MemoryAttention
from memory.config import MemoryConfig
from tests.examples import examples
from tests.test_run import tiny

# a width no memory head count of the defaults (memory.read_heads=4, memory.attn_heads=4) divides; dim // heads even
ODD_WIDTH = ["model.dim=18", "model.heads=1"]


def without_memory_keys(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("memory.")]


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
def test_a_baseline_takes_a_width_that_its_unused_memory_heads_do_not_divide(agent, tmp_path, capsys):
    """`agent=transformer model.dim=18 model.heads=1` was refused with `memory.read_heads=4: must be >= 1 and divide
    model.dim=18`: a key of the slot bank, which a baseline has none of (its config sets memory.slots=0,
    memory.store=false, memory.internal=none)."""
    run_dir = tmp_path / "run"
    overrides = without_memory_keys(tiny("ContinualShift-v0", agent, run_dir, *ODD_WIDTH))
    assert run.main(overrides) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "metrics.json").read_text())["agent"] == agent
    assert "model:\n  dim: 18\n" in (run_dir / "config.yaml").read_text()


def test_memnet_checks_a_head_count_only_where_a_memory_part_reads_with_it(capsys):
    # no slot bank and no attention: read_heads and attn_heads are inert (as the note for them says)
    cfg = load_config(["memory.slots=0", "memory.store=false", *ODD_WIDTH])
    assert (cfg.model.dim, cfg.memory.read_heads, cfg.memory.attn_heads) == (18, 4, 4)
    with pytest.raises(ConfigError, match=r"^memory.read_heads=4: must be >= 1 and divide model.dim=18 "):
        load_config(ODD_WIDTH)  # the slot bank reads with 4 heads
    with pytest.raises(ConfigError, match=r"^memory.attn_heads=4: must divide model.dim=18$"):
        load_config(["memory.slots=0", *ODD_WIDTH])  # the store's attention does
    with pytest.raises(ConfigError, match=r"^memory.read_heads=0: must be >= 1 "):
        load_config(["memory.slots=0", "memory.read_heads=0"])  # an impossible value still is one
    with pytest.raises(ValueError, match=r"^memory.attn_heads=4: must divide memory.dim=18$"):
        MemoryAttention(MemoryConfig(dim=18, slots=0, store=False))  # on its own: said (was narrower)


@pytest.mark.parametrize("arg", ["=x", "=3"])
def test_the_benchmark_names_an_item_without_a_key_as_not_key_value(arg, capsys):
    from agents import benchmark

    assert benchmark.main([arg]) == 2  # was "unknown key ''; benchmark keys: ..."
    assert capsys.readouterr().err == f"error: argument {arg!r} is not key=value; run python -m agents.benchmark " \
                                      "--help\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quoted") / "a run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    return run_dir


def test_a_quoted_path_is_the_path_in_every_path_key(finished_run, tmp_path, capsys):
    """`runs_root=~/runs` is refused by Hydra's grammar, which wants `runs_root='~/runs'`; the same quotes on the
    paths read as given stayed in the name: `out='/tmp/e.json'` wrote `<run>/'/tmp/e.json'` (a folder named `'` in
    the run folder), and `resume='<run>'` or `config='<run>'` found no such path."""
    from agents import benchmark, evaluate
    from agents.run_config import config_for
    from agents.tune_command_line import parse_command_line

    out = tmp_path / "e.json"
    assert evaluate.main([f"checkpoint='{finished_run}'", f"out='{out}'"]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["agent"] == "transformer"
    assert sorted(p.name for p in finished_run.iterdir() if "'" in p.name) == []
    assert evaluate.main([f'checkpoint="{finished_run}"', "out='e2.json'"]) == 0  # double quotes, relative out=
    assert (finished_run / "e2.json").is_file()
    cfg, _, _ = config_for([f"config='{finished_run}'", "seed=5"])
    assert (cfg.agent.name, cfg.seed, cfg.model.dim) == ("transformer", 5, 32)
    cfg, run_dir, checkpoint = config_for([f"resume='{finished_run}'"])
    assert (cfg.agent.name, run_dir, checkpoint) == ("transformer", finished_run, finished_run)
    assert parse_command_line(["resume='/a b/sweep'"]).resume == "/a b/sweep"
    opts, _ = benchmark.parse_args(["suite='quick'", f"out='{tmp_path / 'bench'}'"])
    assert (opts["suite"], opts["out"]) == ("quick", str(tmp_path / "bench"))
    with pytest.raises(ConfigError, match=r"^config= is empty; "):
        config_for(["config=''"])
    from agents.checkpoint_paths import CheckpointError
    with pytest.raises(CheckpointError, match=r"^no checkpoint at '.*/null': "):  # quoted, null is a name
        config_for(["resume='null'"])
    assert config_for(["resume=null", "train.lanes=3"])[0].train.lanes == 3  # the schema's null: a fresh run


@pytest.mark.parametrize("text", ["2026_12_03", "1e-3", "1.50", "true", "1e400"])
def test_a_path_key_takes_a_number_like_name_as_given(text, finished_run):
    """Hydra's grammar reads these as numbers or booleans, and the text key got Python's spelling of that value:
    `runs_root=2026_12_03` wrote the runs under `20261203/`, `run_dir=1e-3` into `0.001/`, `runs_root=true` into
    `True/`."""
    from agents.run_config import config_for

    assert load_config([f"runs_root={text}"]).runs_root == text
    assert load_config([f"run_dir={text}"]).run_dir == text
    assert load_config(["env=NeedleRecall-v0", f"env.kwargs.haystack_path={text}"]).env.kwargs.haystack_path == text
    assert config_for([f"config={finished_run}", f"run_dir={text}"])[0].run_dir == text  # on a saved config too
    assert load_config(["train.lanes=2_0", "run_dir=null"]).train.lanes == 20  # numbers stay numbers, null null
    assert load_config(["run_dir=null"]).run_dir is None


@pytest.mark.parametrize("text", ["2026_12_03", "1e-3", "true"])
def test_an_evaluation_takes_a_number_like_env_path_as_given(text):
    """agents.evaluate parses its env options itself: env.kwargs.haystack_path=2026_12_03 was 20261203 there (and
    refused as such), while agents.run kept the text; numbers of number options stay numbers."""
    from agents.evaluate_args import override_grid

    assert override_grid([f"env.kwargs.haystack_path={text}"]) == [({"haystack_path": text}, {})]
    assert override_grid(["env.kwargs.num_tasks=2_0"]) == [({"num_tasks": 20}, {})]


@settings(max_examples=examples(30), deadline=None)
@given(st.from_regex(r"[0-9+-][0-9_.eE+-]{0,8}|true|false|True|no|off|nan|inf", fullmatch=True))
def test_a_path_key_is_never_given_another_spelling_of_its_value(text):
    """What Hydra's grammar reads as a number or a boolean: the folder is the text as written, or the line is
    refused (never a silently different name)."""
    try:
        cfg = load_config([f"run_dir=a/{text}", f"runs_root={text}"])
    except ConfigError:
        return
    assert (cfg.run_dir, cfg.runs_root) == (f"a/{text}", text)


def test_a_run_writes_under_the_runs_root_it_was_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in tiny("ContinualShift-v0", "transformer", "x", "train.episodes=0") if
                 not o.startswith("run_dir=")]
    assert run.main([*overrides, "runs_root=2026_12_03"]) == 0, capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["2026_12_03"]  # was 20261203
    assert len(list((tmp_path / "2026_12_03" / "ContinualShift-v0" / "transformer").glob("*_s0"))) == 1


@pytest.mark.parametrize("override, message", [
    ("memory.slots=true", "memory.slots: 'true' is not a whole number; give one, e.g. memory.slots=64"),
    ("train.lr=false", "train.lr: 'false' is not a number; give one, e.g. train.lr=0.003"),
])
def test_a_boolean_for_a_number_is_named_as_written(override, message):
    with pytest.raises(ConfigError) as refused:  # was 'True' / 'False', Python's spelling of what was given
        load_config([override])
    assert str(refused.value) == message


@pytest.mark.parametrize("arg, field", [("max_failures=-1", "max_failures"), ("scheduler.type=fifo", "scheduler"),
                                        ("metric=cl/BWT", "metric"), ("resources.cpus=2", "resources")])
def test_a_sweep_field_without_its_prefix_names_the_prefix(arg, field):
    from agents.tune_command_line import parse_command_line

    with pytest.raises(ConfigError) as refused:  # was "unknown config key 'max_failures'; run `python -m agents.run
        parse_command_line(["env=ContinualShift-v0", arg])  # --help` to list the keys", whose list lacks it
    assert str(refused.value) == f"{arg}: {field} is a field of the sweep file; set it with sweep.{arg}"


def test_a_sweep_of_model_dim_gives_each_trial_its_memory_width(capsys):
    """memory.dim is model.dim (agents/conf: ${model.dim}); the sweep's base config holds it resolved, so a swept
    model.dim was refused before Ray started: "memory.dim=32 must equal model.dim=64; set model.dim only"."""
    from agents.tune_prepare import prepare
    from agents.tune_space import trial_config

    plan, base, _ = prepare(["env=ContinualShift-v0", "sweep=smoke", "sweep.search_space.model.dim=grid:[32,64]"])
    assert plan.search_space["model.dim"] == {"grid": [32, 64]}
    cfg = trial_config(OmegaConf.create(base), {"model.dim": 64, "memory.slots": 8})
    assert (cfg.model.dim, cfg.memory.dim, cfg.memory.slots) == (64, 64, 8)
    with pytest.raises(ConfigError, match=r"^memory.dim=64 must equal model.dim=32; set model.dim only$"):
        trial_config(OmegaConf.create(base), {"memory.dim": 64})  # the tied key itself: still its own line


@pytest.mark.parametrize("args, message", [
    (["train.threads=2"], "train.threads=2: every trial of a sweep runs with sweep.resources.threads=1 torch and "
                          "FAISS threads; set sweep.resources.threads=2 instead"),
    (["memory.store_threads=2"], "memory.store_threads=2: every trial of a sweep runs with sweep.resources.threads=1"
                                 " torch and FAISS threads; set sweep.resources.threads=2 instead"),
    (["sweep.search_space.train.threads=grid:[1,2]"], "sweep.search_space.train.threads: cannot be swept, every "
                                                      "trial runs with sweep.resources.threads=1 torch and FAISS "
                                                      "threads; drop it"),
])
def test_a_sweep_refuses_thread_counts_its_trials_would_not_run_with(args, message):
    """Every trial sets train.threads and memory.store_threads to sweep.resources.threads: a command line's other
    count was dropped silently, and a swept one ran the same trials under two labels."""
    from agents.tune_prepare import prepare

    with pytest.raises(ConfigError) as refused:
        prepare(["env=ContinualShift-v0", "sweep=smoke", *args])
    assert str(refused.value) == message
    plan, base, _ = prepare(["env=ContinualShift-v0", "sweep=smoke", "train.threads=2", "sweep.resources.threads=2"])
    assert plan.resources["threads"] == base["train"]["threads"] == 2  # the same count: taken


def test_a_unusable_path_for_the_file_system_is_one_line_in_every_path_argument(finished_run, tmp_path, capsys):
    """A name over 255 bytes was an OSError traceback (File name too long) at the first look at it: agents.evaluate's
    checkpoint= and out=, agents.run's resume=, agents.tune's resume= (pyarrow's) and agents.benchmark's suite=."""
    from agents import tune
    from agents.benchmark_suite import load_suite
    from agents.checkpoint_paths import CheckpointError
    from agents.evaluate_args import parse
    from agents.run_config import config_for

    long = "a" * 300
    over = "a name in it is 300 bytes, over the 255 a file name may have"
    with pytest.raises(ConfigError, match=rf"^out={long[:60]}\.\.\.: a name in it is 305 bytes, over the 255 "):
        parse([f"checkpoint={finished_run}", f"out={long}.json"])
    for argv in ([f"checkpoint={tmp_path / long}"], [f"checkpoint={tmp_path / long / 'checkpoints' / 'last.pt'}"]):
        with pytest.raises(CheckpointError, match=rf": {over}; name the run folder itself$"):
            parse(argv)
    with pytest.raises(CheckpointError, match=rf": {over}; name the run folder itself$"):
        config_for([f"resume={tmp_path / long}"])
    assert tune.main([f"resume={tmp_path / long}"]) == 2
    assert capsys.readouterr().err.endswith(f": {over}; point it at a sweep folder\n")
    with pytest.raises(ConfigError, match=r"^suite file '.*\.\.\.': a name in it is 305 bytes, over the 255 "):
        load_suite(str(tmp_path / f"{long}.yaml"))


def test_a_symlink_loop_is_one_line_in_every_path_argument(finished_run, tmp_path, capsys, monkeypatch):
    """Path.resolve() of a path through a symlink loop raised RuntimeError before Python 3.13 (a traceback, exit 1) at
    agents.run's run_dir= and runs_root=, agents.tune's runs_root=, agents.benchmark's out= and agents.evaluate's
    out=; nothing is made."""
    from agents import benchmark, evaluate, tune
    from agents.cli_args import shortened

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    said = "a symbolic link in it leads round in a loop"
    for argv in ([f"run_dir={loop}"], [f"runs_root={loop}"], [f"runs_root={loop / 'runs'}"]):
        assert run.main([*argv, "train.episodes=0"]) == 2
        key, value = argv[0].split("=", 1)
        assert capsys.readouterr().err == f"error: {key}={shortened(value)}: {said}; choose another\n"
    assert tune.main(["sweep=smoke", f"runs_root={loop}"]) == 2
    assert capsys.readouterr().err == f"error: runs_root={shortened(str(loop))}: {said}; choose another\n"
    assert benchmark.main([f"out={loop / 'b'}"]) == 2
    assert capsys.readouterr().err == f"error: out={shortened(str(loop / 'b'))!r}: {said}; choose another folder\n"
    for out in (loop, loop / "eval.json"):
        assert evaluate.main([f"checkpoint={finished_run}", f"out={out}"]) == 2
        assert capsys.readouterr().err == f"error: out={shortened(str(out))}: {said}; name another file\n"
    monkeypatch.chdir(tmp_path)  # out=loop/eval.json is taken inside the run folder: the loop here is not in its way
    assert evaluate.main([f"checkpoint={finished_run}", "out=loop/eval.json"]) == 0
    written = finished_run / "loop" / "eval.json"
    assert json.loads(written.read_text())  # (then removed: other tests share the run)
    written.unlink()
    written.parent.rmdir()
    assert [p.name for p in tmp_path.iterdir()] == ["loop"]


def test_a_path_that_is_not_utf8_is_one_line_before_anything_is_made(tmp_path, capsys):
    """Bytes the locale does not decode reach Python as lone surrogates: a runs_root= or run_dir= of them made the run
    folder, then TensorBoard's writer failed on it (a UnicodeEncodeError traceback, the folder left behind), and
    agents.tune resume= was pyarrow's traceback."""
    from agents import tune
    from agents.run_config import config_for

    name = str(tmp_path / "r\udcff")  # what `runs_root=$'r\xff'` is in a UTF-8 locale
    for key in ("runs_root", "run_dir"):
        with pytest.raises(ConfigError, match=rf"^{key}='/.*': not UTF-8 text \(bytes the locale does not "
                                              "decode\\); TensorBoard's writer and Ray take UTF-8 names only"):
            load_config([f"{key}='{name}'"])
    assert run.main([f"runs_root='{name}'", "train.episodes=0"]) == 2
    assert list(tmp_path.iterdir()) == []
    haystack = [f"env.kwargs.haystack_path='{tmp_path / 'h'}\udcff.txt'"]  # saved in its hparams, its last write
    with pytest.raises(ConfigError, match=r"^env.kwargs.haystack_path='/.*': not UTF-8 text \(bytes the locale "):
        config_for(["env=NeedleRecall-v0", *haystack])  # a new run (agents.tune's trials too)
    assert load_config(["env=NeedleRecall-v0", *haystack])  # agents.evaluate may take it: it writes JSON only
    assert tune.main([f"resume={name}"]) == 2
    assert capsys.readouterr().err.endswith(": it is not UTF-8 text; point it at a sweep folder\n")


def test_the_benchmark_refuses_an_out_folder_that_is_not_utf8_before_any_run(tmp_path, capsys):
    from agents import benchmark

    out = tmp_path / "b\udcff"  # every run failed on it, then writing results.md was a UnicodeEncodeError traceback
    assert benchmark.main(["envs=NeedleRecall-v0", "agents=transformer", "seeds=1", f"out={out}"]) == 2
    assert capsys.readouterr().err == f"error: out={str(out)!r}: not UTF-8 text (bytes the locale does not decode); " \
                                      "the runs' TensorBoard writers and the report take UTF-8 names only: choose one\n"
    assert list(tmp_path.iterdir()) == []
