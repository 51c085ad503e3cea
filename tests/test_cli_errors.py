"""Bad input to the CLIs (`agents.run`, `agents.evaluate`) that only shows once a run folder exists: one line on
stderr, exit code 2, no traceback; and the checkpoint paths that are accepted."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from agents import evaluate, run, run_config
from agents.config import load_config, to_yaml
from tests.test_run import tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished transformer run, shared by the tests that only read it (their bad input fails first)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    return run_dir


def one_error_line(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_resume_accepts_the_checkpoint_file_and_continues_in_its_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    (run_dir / "metrics.json").unlink()
    assert run.main([f"resume={run_dir / 'checkpoints' / 'last.pt'}"]) == 0  # crashed in mkdir on the file
    assert json.loads((run_dir / "metrics.json").read_text())["episodes"] == 1
    stray = tmp_path / "elsewhere.pt"
    stray.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    assert run.main([f"resume={stray}"]) == 2
    one_error_line(capsys, "a run continues in its own folder")
    # the same file as a folder's last.pt (a folder without checkpoints/): refused too; it ran on, writing the run's
    # files in beside the user's own and leaving the loose last.pt stale
    loose = tmp_path / "downloads"
    loose.mkdir()
    (loose / "last.pt").write_bytes(stray.read_bytes())
    (loose / "notes.txt").write_text("mine")
    assert run.main([f"resume={loose}"]) == 2
    one_error_line(capsys, f"resume={loose} holds last.pt loose, outside a run's checkpoints/ folder: a run continues "
                           f"in its own folder; point resume= at the run folder (the one holding checkpoints/last.pt) "
                           f"or a checkpoint inside it (python -m agents.evaluate checkpoint={loose / 'last.pt'} "
                           "evaluates this one)")
    assert sorted(p.name for p in loose.iterdir()) == ["last.pt", "notes.txt"]
    assert evaluate.main([f"checkpoint={loose}", f"out={tmp_path / 'eval.json'}"]) == 0  # as that line says


def test_evaluate_checks_its_device_override(trained, capsys):
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={trained}", "device=foo"]) == 2
    one_error_line(capsys, "device='foo': choose one of")


def test_an_unusable_runs_root_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run.main(["train.episodes=1", f"runs_root={blocker}"]) == 2
    one_error_line(capsys, "cannot create the run folder")
    assert run.main(["train.episodes=1", f"run_dir={blocker}"]) == 2  # was "(File exists)": as if a folder were
    one_error_line(capsys, f"cannot create the run folder {str(blocker)!r} (a file stands there, not a folder); "
                           "choose another runs_root= or run_dir=")


def test_a_checkpoint_file_of_the_right_format_with_damaged_contents_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    ckpt = run_dir / "checkpoints" / "last.pt"
    good = torch.load(ckpt, weights_only=True)
    for damage in ("trainer field", "store capacity"):
        body = {**good, "trainer": dict(good["trainer"]), "memory": {**good["memory"]}}
        if damage == "trainer field":
            del body["trainer"]["reset_log"]
        else:
            body["memory"]["store"] = {**good["memory"]["store"],
                                       "config": {**good["memory"]["store"]["config"], "capacity": 7}}
        torch.save(body, ckpt)
        capsys.readouterr()
        assert run.main([f"resume={run_dir}"]) == 2, damage
        one_error_line(capsys, "re-run the experiment")


def test_evaluating_with_env_options_that_cannot_replay_the_run_is_one_line(trained, capsys):
    capsys.readouterr()
    tasks = len(json.loads((trained / "metrics.json").read_text())["untrained_accuracy"])
    assert evaluate.main([f"checkpoint={trained}", f"env.kwargs.num_tasks={tasks - 1}"]) == 2
    # the option, the fix and the run's own value (was the restore's line on the accuracy matrix's shape)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: env.kwargs.num_tasks={tasks - 1}: the run was trained on") and "\n" not in err, err
    assert err.endswith(f"keep vocab_size and the task schedule (num_tasks, revisit), as the run's "
                        f"env.kwargs.num_tasks={tasks}"), err


def test_an_env_vocabulary_the_weights_do_not_fit_names_the_option_and_the_runs_value(trained, capsys):
    """Was the restore's "size mismatch for embed.weight" (before that, torch's bare "Error(s) in loading
    state_dict"): it named the tensor, not the option given or the run's own value."""
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={trained}", "env.kwargs.vocab_size=512"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: env.kwargs.vocab_size=512: the run was trained on vocab_size=256 with") \
        and "\n" not in err, err
    assert err.endswith("as the run's env.kwargs.vocab_size=256"), err


def test_help_lists_the_keys_as_the_command_line_sets_them(capsys):
    assert run.main(["--help"]) == 0
    default = capsys.readouterr().out
    assert "config groups:" in default and "memory.store=true" in default and "  env=ContinualShift-v0\n" in default
    assert run.main(["env=LongDependency-v0", "agent=transformer", "--help"]) == 0
    chosen = capsys.readouterr().out
    assert "memory.store=false" in chosen and "  env=LongDependency-v0\n" in chosen
    assert "  agent=transformer\n" in chosen  # (listed as env.id= and agent.name=, which are refused when copied)
    assert run.main(["memory.slot=3", "--help"]) == 2  # a bad key is the same one line as without --help
    one_error_line(capsys, "unknown config key 'memory.slot'")
    assert run.main(["seed=1", "seed=2", "--help"]) == 2  # a key twice too (--help listed the last one)
    one_error_line(capsys, "seed= is given 2 times ('1', '2'); give it once")


@pytest.mark.parametrize("argv", [[], ["env=NeedleRecall-v0", "agent=transformer"], ["env=LongDependency-v0"]])
def test_every_key_help_lists_reads_back_as_the_same_config(argv, capsys):
    """--help's lines, given back as key=value overrides, compose the config they list: `run_dir=None` (Python's
    spelling) was read as the text 'None' and wrote the run into a folder of that name, `resume=None` named a run
    folder 'None'; the env's options were one Python dict, not keys."""
    from agents.config import load_config

    assert run.main([*argv, "--help"]) == 0
    lines = capsys.readouterr().out.split("keys (defaults):\n")[1].splitlines()
    # env.id and agent.name are listed as env= and agent=: their config files set the rest with them (env.id=... was
    # listed, and refused when copied)
    keys = [line.strip() for line in lines]
    assert not any(k.startswith(("env.id=", "agent.name=")) for k in keys) and keys[0].startswith("env=")
    assert "run_dir=null" in keys and "resume=null" in keys and any(k.startswith("env.kwargs.vocab_size") for k in keys)
    expected = OmegaConf.to_container(load_config(argv), resolve=True)
    assert OmegaConf.to_container(load_config(keys), resolve=True) == expected
    assert run_config.config_for(keys)[1:] == (None, None)  # resume=null: a new run, as the schema's null means
    assert run_config.config_for(["resume=NULL", "seed=2"])[1:] == (None, None)  # Hydra's null in any case


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_leaves_no_run_folder(tmp_path, capsys):
    assert run.main(["device=cuda", "train.episodes=1", f"runs_root={tmp_path}"]) == 2
    one_error_line(capsys, "cuda")
    assert not list(tmp_path.iterdir())


def test_resume_at_a_runs_checkpoints_folder_continues_in_the_run_folder(tmp_path, capsys):
    """Given <run>/checkpoints, a resumed run went on inside it (checkpoints/checkpoints/last.pt), and the next
    resume=<run> went back to the older checkpoint."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.checkpoint_every=1")) == 0
    body = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert run.main([f"resume={run_dir / 'checkpoints'}"]) == 0
    assert f"-> {run_dir}\n" in capsys.readouterr().out
    inside = run_dir / "checkpoints"
    assert not (inside / "checkpoints").exists() and not (inside / "config.yaml").exists()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["trainer"]["episode"] == \
        body["trainer"]["episode"]  # finished already: nothing more to train, same checkpoint
    assert evaluate.main([f"checkpoint={run_dir / 'checkpoints'}", "out=e.json"]) == 0
    assert (run_dir / "e.json").is_file() and not (run_dir / "checkpoints" / "e.json").exists()


def test_a_fresh_run_never_overwrites_a_run_folder(trained, capsys):
    before = (trained / "checkpoints" / "last.pt").read_bytes()
    assert run.main(tiny("LongDependency-v0", "transformer", trained, "seed=7")) == 2
    one_error_line(capsys, f"run_dir={str(trained)!r} already holds a run; continue it with resume={trained}")
    assert (trained / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("override, message", [
    ("model.dim=36", "model.heads=4: dim // heads = 9 must be even (rotary positions)"),  # was a traceback
    ("model.dim=-4", "model.dim=-4: must be >= 1"),  # was "memory.dim=-4: ...", a key the line never gave
    ("model.dim=6", "memory.read_heads=4: must be >= 1 and divide model.dim=6"),  # was "divide dim=6": which dim?
    ("seed=18446744073709551616", "seed=18446744073709551616: must be in [0, 2^32)"),  # torch's overflow
    # lane i is seeded seed + i, and the env takes seeds below 2^32 (as every seed): numpy took any
    ("seed=4294967290", "seed=4294967290: the 16 lanes are seeded 4294967290 .. 4294967305, past 2^32 - 1; use seed "
     "<= 4294967280"),
    ("env.kwargs.world_seed=4294967296", "env.kwargs for ContinualShift-v0: world_seed must be an integer in [0, "
     "4294967295], got 4294967296"),
    ("runs_root=", "runs_root= is empty"),  # wrote the run into the working folder
    # found by an audit, 2026-12-01: a mid-run traceback, a silent hang, an option the user never set, OmegaConf's
    # "Merge error: int is not a subclass of ModelSchema", a message naming three keys
    ("memory.context_scale=1e18", "memory.context_scale=1e+18: must be in (0, 1e+06] "),
    ("memory.store_top_k=100000", "memory.store_top_k=100000: must be in [1, store_capacity=4096] "),
    ("train.lanes=100000000", "train.lanes=100000000: must be in [1, 65536]"),
    ("model.window=1000000", "model.window=1000000: must be in [1, 65536]"),  # an OOM kill: exit 137, no message
    ("model=3", "model=3: model is a section of keys; set model.<key>=<value> "),
    ("train=5", "train=5: train is a section of keys; set train.<key>=<value> "),
    ("train.entropy_coef=-1", "train.entropy_coef=-1.0: must be >= 0"),
    ("memory.key_lags=1:0+1:0", "memory.key_lags='1:0+1:0': the lag pair '1:0' is given twice; give each pair once"),
    # the same pair spelled another way was told the generic "each o and p an int in [0, 64]", which both were
    ("memory.key_lags=1:0+01:00", "memory.key_lags='1:0+01:00': the lag pair '1:0' is given twice; give each pair "
     "once"),
    # a second audit, 2026-12-01: OmegaConf's or Hydra's words with no fix, and two overrides that ran a default run
    ("train.lanes=null", "train.lanes: null is not a whole number; give one, e.g. train.lanes=16"),
    ("train.amp=null", "train.amp: null is not a boolean; give one, e.g. train.amp=false"),
    ("train.lanes=${oc.env:MEMSTREAM_UNSET_VARIABLE,abc}",  # was "While dereferencing interpolation ..."
     "train.lanes=${oc.env:MEMSTREAM_UNSET_VARIABLE,abc}: 'abc' is not a whole number; give one, e.g. train.lanes=16"),
    ("env.kwargs=3", "env.kwargs=3: env.kwargs is a section of keys; set env.kwargs.<key>=<value> one key at a time"),
    ("memory={}", "memory={}: memory is a section of keys; set memory.<key>=<value> one key at a time"),
    ("memory.sl@ts=3", "unknown config key 'memory.sl@ts'; did you mean 'memory.slots'?"),
    ("run_dir=", "run_dir= is empty: name the folder to write the run into, or leave run_dir out"),
    # an audit, 2026-12-02: a number taken as true, OmegaConf's and Hydra's words (a defaults-list syntax)
    ("train.amp=2", "train.amp: 2 is not a boolean; give one, e.g. train.amp=false"),
    ("memory.decay=-1", "memory.decay: -1 is not a boolean; give one, e.g. memory.decay=false"),
    ("run_dir=[a,b]", "run_dir: [a,b] is a list, and run_dir takes one value; give one"),
    ("+agent=gru", "+agent=gru: agent is a config group, there already: choose it with agent=<name> (without '+')"),
    ("++env=NeedleRecall-v0", "++env=NeedleRecall-v0: env is a config group, there already: choose it with env=<name>"),
    # FAISS takes C ints: a traceback at the first search (an OverflowError) or the index's build (a TypeError)
    ("memory.store_hnsw_ef_search=2147483648", "memory.store_hnsw_ef_search=2147483648: must be in [1, 2147483647]"),
    ("memory.store_hnsw_neighbors=2147483648", "memory.store_hnsw_neighbors=2147483648: must be in [2, 2147483647]"),
])
def test_configs_that_failed_later_are_one_line_at_once(tmp_path, capsys, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    assert run.main(["train.episodes=1", override]) == 2
    one_error_line(capsys, message)
    assert not any(tmp_path.iterdir())


def test_a_run_stopped_before_its_first_checkpoint_can_be_started_again_in_its_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    argv = tiny("ContinualShift-v0", "transformer", run_dir)
    (run_dir / "config.yaml").write_text(to_yaml(load_config(argv)))  # what a run stopped before any checkpoint
    assert run.main(argv) == 0  # leaves (a config.yaml that is no run's is refused: tests/test_adverse_conditions.py)


@pytest.mark.parametrize("argv, message", [
    (["resume="], "resume= is empty; point it at a run folder"),  # was: no checkpoint at '<cwd>/last.pt'
    (["resume=a", "resume=b"], "resume= is given 2 times ('a', 'b'); give it once"),  # b was dropped
    (["config=", "seed=1"], "config= is empty; point it at a run folder's config.yaml"),
    (["config=a.yaml", "config=b.yaml"], "config= is given 2 times"),
    (["config=a.yaml", "config=b.yaml", "--help"], "config= is given 2 times"),
    # any key, as agents.evaluate refuses: the last one won silently (an audit, 2026-12-01)
    (["train.lanes=2", "train.lanes=3"], "train.lanes= is given 2 times ('2', '3'); give it once"),
    (["env=ContinualShift-v0", "env=NeedleRecall-v0"], "env= is given 2 times ('ContinualShift-v0', 'NeedleRecall"),
    (["seed=1", "+seed=2"], "seed= is given 2 times ('1', '2'); give it once"),
    # a deletion or a bare word next to the key keeps its own line (the repeat check's IndexError traceback, once)
    (["~train.lanes", "train.lanes=2"], "~train.lanes: a key cannot be deleted (~key)"),
    (["seed", "seed"], "'seed' is not a key=value override"),
])
def test_an_empty_or_repeated_resume_or_config_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert run.main(argv) == 2
    one_error_line(capsys, message)


@pytest.mark.parametrize("override, why", [
    # torch's RuntimeError, in the slot bank: 355 PiB, beyond any address space (a smaller ask may succeed lazily)
    ("memory.slots=100000000000000000", "an allocation of 355 PiB failed"),
    # the store's arrays, weighed against this machine's memory before numpy is asked (memory/ram.py; numpy said
    # "array is too big"), in the store the trainer makes before the run folder (the first forward made it, after
    # the folder and its config.yaml were written)
    ("memory.store_capacity=1000000000000000000", "an allocation of 1,094,236 PiB failed"),
    # sizes whose product passes int64: torch's TypeError ("Overflow when unpacking long long") with C++ frames
    ("model.mlp_ratio=4611686018427387904", "sizes beyond what can be allocated"),
])
def test_sizes_that_do_not_fit_in_memory_are_one_line(tmp_path, capsys, override, why):
    """Were a traceback (DefaultCPUAllocator: can't allocate memory; numpy's _ArrayMemoryError), exit code 1."""
    assert run.main(tiny("ContinualShift-v0", "memnet", tmp_path / "run", override)) == 2
    assert not (tmp_path / "run").exists(), "a run that cannot start left a folder behind"
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the run does not fit in memory ({why}) with the sizes train.lanes=2, model.dim=32")
    assert override in err and err.endswith("; lower them") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("error", [RuntimeError, TypeError])
def test_a_runtime_error_that_is_not_an_allocation_keeps_its_traceback(tmp_path, monkeypatch, error):
    from agents import trainer

    def broken(self, cfg, run_dir, logger=None):
        raise error("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")

    monkeypatch.setattr(trainer.Trainer, "__init__", broken)
    with pytest.raises(error, match="cannot be multiplied"):
        run.main(tiny("ContinualShift-v0", "transformer", tmp_path / "run"))


@pytest.mark.parametrize("argv, message", [
    # Python's int() refuses numbers over 4,300 digits inside Hydra's parser: a ValueError traceback (its wording
    # differs by version: "the limit (4300)" on 3.10, "the limit (4300 digits)" from 3.11)
    (["seed=" + "9" * 5000], "seed: exceeds the limit (4300"),
    (["env.kwargs.num_tasks=" + "9" * 5000], "env.kwargs.num_tasks: exceeds the limit (4300"),
    # names the file system cannot hold: OSError tracebacks (File name too long)
    (["run_dir=/tmp/" + "a" * 300], "a name in it is 300 bytes, over the 255 a file name may have"),
    (["runs_root=" + "/b" * 2100], "it is 4200 bytes, over the 4095 a path may have"),
    (["config=/tmp/" + "c" * 300], "cannot be read (File name too long)"),
])
def test_values_too_long_for_python_or_the_file_system_are_one_line(argv, message, capsys):
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert len(err) < 400  # the value is shortened in the line
