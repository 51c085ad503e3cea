"""`python -m agents.run config=<saved config.yaml> [key=value ...]`: a new run from a run's (or a sweep's) saved
config, and the one-line errors around it."""

import json

import pytest
import yaml

from agents import run
from tests.test_run import tiny


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("first") / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir)) == 0
    return run_dir


def test_a_run_from_a_saved_config_repeats_it_exactly(first_run, tmp_path):
    again = tmp_path / "again"
    assert run.main([f"config={first_run / 'config.yaml'}", f"run_dir={again}"]) == 0
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (first_run, again))
    for key in ("ACC", "BWT", "accuracy_matrix", "accuracy", "params"):
        assert second[key] == first[key], key
    saved = [yaml.safe_load((d / "config.yaml").read_text()) for d in (first_run, again)]
    assert saved[1].pop("run_dir") == str(again) and saved[0].pop("run_dir") == str(first_run)
    assert saved[1] == saved[0]


def test_overrides_apply_on_top_of_the_saved_config(first_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert run.main([f"config={first_run / 'config.yaml'}", f"run_dir={other}", "seed=1",
                     "env.kwargs.trials_per_episode=6"]) == 0
    saved = yaml.safe_load((other / "config.yaml").read_text())
    assert saved["seed"] == 1 and saved["env"]["kwargs"]["trials_per_episode"] == 6
    assert saved["model"]["dim"] == 32  # the rest is the saved run's (tiny), not the defaults (128)
    capsys.readouterr()
    assert run.main([f"config={first_run / 'config.yaml'}", "model.layers=3", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "  model.dim=32" in shown and "  model.layers=3" in shown and "config=<saved config.yaml>" in shown


@pytest.mark.parametrize("args, message", [
    (["env=NeedleRecall-v0"], "env=NeedleRecall-v0: config= keeps the saved run's env and agent"),
    (["agent=lstm"], "agent=lstm: config= keeps the saved run's env and agent"),
    (["memory.nokey=1"], "unknown config key 'memory.nokey'"),
    (["train.lanes=abc"], "train.lanes: 'abc' is not a whole number; give one, e.g. train.lanes=16"),
    (["seed=-1"], "seed=-1: must be in [0, 2^32)"),
    (["resume=somewhere"], "config= starts a new run from a saved config, resume= continues a run; use one"),
    (["--config-path", "x"], "unknown option --config-path: agents.run takes key=value overrides"),
    (["seed=1,2"], "seed=1,2: one value per key (a comma list, range() or choice() is a sweep"),  # check_overrides
    (["~seed"], "~seed: a key cannot be deleted (~key): every key has a value"),
    (["memory.dim=64"], "memory.dim=64 must equal model.dim=32; set model.dim only"),
])
def test_bad_overrides_of_a_saved_config_are_one_line(first_run, tmp_path, capsys, args, message):
    assert run.main([f"config={first_run / 'config.yaml'}", f"run_dir={tmp_path / 'no'}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("content, message", [
    (None, "no such file; point it at a run folder, a run's config.yaml or a sweep's best_config.yaml"),
    ("a: [1, 2\n", "not valid YAML (ParserError)"),
    ("- 1\n- 2\n", "holds no mapping of keys"),
    ("", "holds no mapping of keys"),  # an empty file started a run with every default
    ("# nothing\n", "holds no mapping of keys"),
    # a run's metrics.json (JSON is YAML, and it has env: <id>): was "unknown config key 'episodes'"
    ('{"env": "ContinualShift-v0", "agent": "memnet", "seed": 0, "episodes": 3, "ACC": 0.5}', "is no run config"),
    ('{"checkpoint": "x", "evaluations": []}', "is no run config (a run's config.yaml has env, agent, model and train"),
])
def test_a_missing_or_unusable_config_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    assert run.main([f"config={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: config={path}: ") and message in err and len(err.splitlines()) == 1, err


def test_a_saved_config_with_a_section_set_as_a_value_is_one_line(first_run, tmp_path, capsys):
    path = edited_config(first_run, tmp_path, "env.kwargs", 3)
    assert run.main([f"config={path}", f"run_dir={tmp_path / 'no'}"]) == 2
    assert capsys.readouterr().err.strip() == ("error: env.kwargs=3: env.kwargs is a section of keys; set "
                                               "env.kwargs.<key>=<value> one key at a time (`python -m agents.run "
                                               "--help` lists them)")


def edited_config(first_run, folder, key: str, value):
    """The first run's config.yaml, by hand: dotted `key` set to `value`, written to `folder`/config.yaml."""
    saved = yaml.safe_load((first_run / "config.yaml").read_text())
    *parents, name = key.split(".")
    holder = saved
    for part in parents:
        holder = holder[part]
    holder[name] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    return path


@pytest.mark.parametrize("key, overrides, message", [
    # the env and agent are read before the file is checked (to take their shipped defaults): this was a traceback
    ("agent.name", [], "error: agent.name=${nope}: Interpolation key 'nope' not found"),
    ("env.id", ["env.kwargs.trials_per_episode=6"], "error: env.id=${nope}: Interpolation key 'nope' not found"),
    # an override set a key inside the broken section and the run started without the file's options
    ("env.kwargs", ["env.kwargs.trials_per_episode=6"], "error: env.kwargs=${nope}: env.kwargs is a section of keys"),
    ("seed", [], "error: seed=${nope}: Interpolation key 'nope' not found"),
])
def test_a_saved_config_with_an_interpolation_that_does_not_resolve_is_one_line(first_run, tmp_path, capsys, key,
                                                                                  overrides, message):
    path = edited_config(first_run, tmp_path, key, "${nope}")
    assert run.main([f"config={path}", f"run_dir={tmp_path / 'no'}", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and not (tmp_path / "no").exists()


@pytest.mark.parametrize("key", ["run_dir", "resume", "memory.dim"])
def test_keys_a_saved_config_drops_may_hold_anything(first_run, tmp_path, key):
    """run_dir, resume and memory.dim (model.dim's) of a file are dropped unread: `run_dir: ${nope}` was a traceback."""
    from agents.config_file import from_yaml_file

    cfg = from_yaml_file(str(edited_config(first_run, tmp_path, key, "${nope}")), [])
    assert cfg.run_dir is None and cfg.resume is None and cfg.memory.dim == cfg.model.dim == 32


def test_a_saved_configs_broken_interpolation_gives_way_to_an_override(first_run, tmp_path):
    path = edited_config(first_run, tmp_path, "seed", "${nope}")  # the override replaces what the file cannot give
    assert run.main([f"config={path}", f"run_dir={tmp_path / 'run'}", "seed=3", "train.episodes=1"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 3


def test_an_unknown_option_without_config_is_one_line(capsys):
    assert run.main(["--foo"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown option --foo: agents.run takes key=value overrides "
                                               "(and --help to list them)")


def test_overrides_of_a_saved_config_read_as_on_a_fresh_command_line(first_run):
    """Hydra's grammar, not YAML 1.1's: "3:0" stayed a string only on a fresh command line (YAML read it as the
    sexagesimal 180), "010" a string (YAML: 8); and model.dim moves memory.dim with it, as agents/conf ties them."""
    from omegaconf import OmegaConf

    from agents.config import load_config
    from agents.config_file import from_yaml_file

    overrides = ["memory.key_lags=3:0", "env.kwargs.shift=010", "model.dim=64", "train.episodes=null"]
    saved = from_yaml_file(str(first_run / "config.yaml"), overrides)
    fresh = load_config(["env=ContinualShift-v0", *overrides])
    for key in ("memory.key_lags", "env.kwargs.shift", "model.dim", "memory.dim", "train.episodes"):
        assert OmegaConf.select(saved, key) == OmegaConf.select(fresh, key), key
    assert (saved.memory.key_lags, saved.memory.dim) == ("3:0", 64)


@pytest.mark.parametrize("content, command_line", [
    ("seed: 3\n", ["seed=3"]),
    ("env:\n  id: NeedleRecall-v0\nagent:\n  name: lstm\nseed: 2\n", ["env=NeedleRecall-v0", "agent=lstm", "seed=2"]),
])
def test_a_partial_config_file_takes_the_shipped_defaults_of_its_env_and_agent(tmp_path, content, command_line):
    """A file with a few keys was filled from the schema's plain defaults (copy 0.0, cosine search, lr 3e-3, no env
    options ...): another run than the same keys on a command line, without a word."""
    from omegaconf import OmegaConf

    from agents.config import load_config
    from agents.config_file import from_yaml_file

    path = tmp_path / "config.yaml"
    path.write_text(content)
    got, want = from_yaml_file(str(path)), load_config(command_line)
    assert OmegaConf.to_container(got, resolve=True) == OmegaConf.to_container(want, resolve=True)


def test_config_takes_a_run_folder_as_resume_does(first_run, tmp_path, capsys):
    """config=<run folder> said "no such file"; resume= and agents.evaluate's checkpoint= take the folder."""
    assert run.config_for([f"config={first_run}"])[0] == run.config_for([f"config={first_run / 'config.yaml'}"])[0]
    assert run.main([f"config={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config={tmp_path}: a folder without a config.yaml; point it "
                                               "at a run folder, a run's config.yaml or a sweep's best_config.yaml")
    # so does --help (it said "no such file")
    from omegaconf import OmegaConf

    assert run.main(["--help", f"config={first_run}"]) == 0
    lanes = OmegaConf.load(first_run / "config.yaml").train.lanes
    assert f"  train.lanes={lanes}" in capsys.readouterr().out.splitlines() and lanes != 16  # the run's lanes
    # and --help resume=<run>: the run's keys, as its checkpoint holds them (it showed the defaults, resume=null)
    assert run.main(["--help", f"resume={first_run}", "train.threads=1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert f"  train.lanes={lanes}" in shown and f"  resume='{first_run}'" in shown and "  train.threads=1" in shown
    assert run.main(["--help", f"resume={tmp_path / 'none'}"]) == 2  # printed the defaults, exit 0
    assert capsys.readouterr().err.startswith("error: no checkpoint at ")
