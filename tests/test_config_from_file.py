"""`config=<saved config.yaml> key=value ...` (from_yaml_file) takes its overrides through the same checks as a fresh
command line (check_overrides), literal and unresolvable interpolations are found inside lists too, and the
shared pieces (Hydra's parse-error reason, the thread bound) have one definition. No training."""

import re

import pytest
from omegaconf import OmegaConf

from agents import evaluate, run
from agents.config import ConfigError, load_config, to_yaml
from agents.config_file import from_yaml_file
from tests.test_run import tiny


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run's config.yaml as agents.run writes it (to_yaml of the validated config), without the training."""
    path = tmp_path_factory.mktemp("saved") / "config.yaml"
    path.write_text(to_yaml(load_config(tiny("ContinualShift-v0", "memnet", path.parent / "run"))))
    return path


SWITCH = "config= keeps the saved run's env and agent; to switch the {0}, start from {0}=<name> key=value"


@pytest.mark.parametrize("override, message", [
    # were accepted: an LSTM trained with MemNet's lr and settings, NeedleRecall with ContinualShift's options
    ("agent.name=lstm", "agent.name=lstm: " + SWITCH.format("agent")),
    ("env.id=NeedleRecall-v0", "env.id=NeedleRecall-v0: " + SWITCH.format("env")),
    ("agent=lstm", "agent=lstm: " + SWITCH.format("agent")),
    ("env=NeedleRecall-v0", "env=NeedleRecall-v0: " + SWITCH.format("env")),
    ("env=NoSuchEnv-v0", "env=NoSuchEnv-v0: " + SWITCH.format("env")),
    # the fresh command line's words (check_overrides), not config='s own
    ("~seed", "~seed: a key cannot be deleted (~key): every key has a value; set it with key=value"),
    ("hydra.run.dir=/tmp/x", "hydra.run.dir=/tmp/x: Hydra's own settings (hydra.*) are not used here"),  # was
    ("seed=1,2", "seed=1,2: one value per key (a comma list, range() or choice() is a sweep"),  # "unknown key"
    ("seed=range(3)", "seed=range(3): one value per key"),
    ("seed=~", "'seed=~' is not a key=value override; write key=value (e.g. seed=3) and quote a value"),
    ("runs_root=a=b", "'runs_root=a=b' is not a key=value override (mismatched input '=' expecting <EOF>); "),
])
def test_overrides_of_a_saved_config_get_the_command_line_checks(saved, override, message):
    with pytest.raises(ConfigError) as caught:
        from_yaml_file(str(saved), [override])
    text = str(caught.value)
    assert message in text and "\n" not in text, text


def test_switching_the_agent_of_a_saved_config_starts_no_run(saved, tmp_path, capsys):
    assert run.main([f"config={saved}", "agent.name=lstm", f"run_dir={tmp_path / 'x'}", "train.episodes=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: agent.name=lstm: {SWITCH.format('agent')} ... instead (without config=)", err
    assert not (tmp_path / "x").exists()


def test_a_saved_configs_own_keys_may_still_be_set(saved):
    cfg = from_yaml_file(str(saved), ["seed=3", "env.kwargs.num_tasks=3", "train.lr=1e-4"])
    assert (cfg.seed, cfg.env.kwargs.num_tasks, cfg.train.lr, cfg.agent.name) == (3, 3, 1e-4, "memnet")


@pytest.mark.parametrize("overrides, message", [
    # an escaped '${' inside a list was kept as text and read back from config.yaml as the interpolation ([0])
    (["env=LongDependency-v0", r"env.kwargs.distances=['\${seed}']"],
     "env.kwargs.distances[0]='${seed}': a value may not hold a literal '${'"),
    (["env=LongDependency-v0", r"env.kwargs.distances=[1,'\${seed}']"],
     "env.kwargs.distances[1]='${seed}': a value may not hold a literal '${'"),
    (["env=LongDependency-v0", r"env.kwargs.distances=[{a:'\${seed}'}]"],
     "env.kwargs.distances[0].a='${seed}': a value"),
    # an unresolvable one inside a list named no key
    (["env=LongDependency-v0", "env.kwargs.distances=[1,${nope}]"],
     "env.kwargs.distances[1]=${nope}: Interpolation key 'nope' not found"),
    (["env=LongDependency-v0", "env.kwargs.distances=[{a:[${nope}]}]"],
     "env.kwargs.distances[0].a[0]=${nope}: Interpolation key"),
])
def test_interpolations_inside_lists_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides)
    text = str(caught.value)
    assert message in text and "\n" not in text, text


def test_a_literal_inside_a_list_is_refused_on_config_too(saved):
    with pytest.raises(ConfigError, match=r"env.kwargs.num_tasks\[0\]='\$\{seed\}': a value may not hold a literal"):
        from_yaml_file(str(saved), [r"env.kwargs.num_tasks=['\${seed}']"])


def test_an_interpolation_inside_a_list_that_resolves_is_taken():
    cfg = load_config(["env=LongDependency-v0", "env.kwargs.distances=[1,${seed}]", "seed=2"])
    assert OmegaConf.to_container(cfg.env.kwargs.distances) == [1, 2]


def test_hydras_parse_error_reason_is_one_helper_for_run_and_evaluate():
    from agents.cli_args import hydra_reason

    for make in (lambda: load_config(["runs_root=a=b"]), lambda: evaluate.override_grid(["env.kwargs.x=a=b"])):
        with pytest.raises(ConfigError, match="mismatched input '=' expecting <EOF>"):
            make()
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    with pytest.raises(HydraException) as caught:
        OverridesParser.create().parse_overrides(["seed=[1"])
    reason = hydra_reason(caught.value)
    assert reason and "\n" not in reason and " expecting {" not in reason and "Error parsing" not in reason


def test_the_thread_bound_is_one_constant(monkeypatch):
    import agents.config
    import memory.config

    assert agents.config.MAX_THREADS is memory.config.MAX_THREADS == 1024
    monkeypatch.setattr(memory.config, "MAX_THREADS", 8)
    with pytest.raises(ValueError, match=r"store_threads=9: must be in \[1, 8\]"):
        memory.config.MemoryConfig(store_threads=9).validate()


def test_adding_a_key_means_what_it_does_on_a_fresh_command_line(saved):
    """+key= for a key that is there was taken as key=; +env.kwargs.<option>= (an option the env's file lacks, which
    a fresh command line adds) was 'unknown config key'."""
    with pytest.raises(ConfigError, match=r"^\+seed= adds a key, and seed is there already; set it with seed=<value>$"):
        from_yaml_file(str(saved), ["+seed=3"])
    cfg = from_yaml_file(str(saved), ["+env.kwargs.render_mode=ansi", "++seed=4", "++env.kwargs.num_tasks=3"])
    assert (cfg.env.kwargs.render_mode, cfg.seed, cfg.env.kwargs.num_tasks) == ("ansi", 4, 3)
    with pytest.raises(ConfigError, match="unknown config key 'memory.nokey'"):
        from_yaml_file(str(saved), ["+memory.nokey=1"])


@pytest.mark.parametrize("item, named", [
    ("env.kwargs.d=[1,2],[3,{a:${x}}]", "env.kwargs.d[1].a='${x}'"),  # a list value's item (was env.kwargs.d=...)
    ("memory.reset=never,${memory.reset}", "memory.reset='${memory.reset}'"),  # a sweep's value: the key itself
])
def test_evaluate_names_the_item_that_holds_an_interpolation(item, named):
    with pytest.raises(ConfigError, match=f"^{re.escape(named)}: an evaluation takes plain values"):
        evaluate.override_grid([item])


@pytest.mark.parametrize("override, message", [
    # config= named the first part only ('foo', 'MEMORY'), or no option list; +env.kwargs.* was refused only when the
    # env was made, after torch loaded, in the env's own words (on both paths)
    ("foo.bar=1", "unknown config key 'foo.bar'; run `python -m agents.run --help` to list the keys"),
    ("MEMORY.RECENCY=abc", "unknown config key 'MEMORY.RECENCY'; run"),
    ("env.kwargs.num_task=3", "unknown config key 'env.kwargs.num_task': ContinualShift-v0 has no option 'num_task'; "
                              "did you mean 'num_tasks'? its options: num_tasks, episodes_per_task"),
    ("+env.kwargs.num_task=3", "unknown config key 'env.kwargs.num_task': ContinualShift-v0 has no option 'num_task'; "
                               "did you mean 'num_tasks'?"),
    ("+memory.foo=1", "unknown config key 'memory.foo'; run"),
])
def test_an_unknown_key_is_the_same_line_with_and_without_config(saved, override, message):
    for compose in (lambda: from_yaml_file(str(saved), [override]), lambda: load_config([override])):
        with pytest.raises(ConfigError) as err:
            compose()
        assert str(err.value).startswith(message), str(err.value)
    assert from_yaml_file(str(saved), ["++env.kwargs.num_tasks=3"]).env.kwargs.num_tasks == 3  # an option: set
    assert load_config(["++env.kwargs.num_tasks=3"]).env.kwargs.num_tasks == 3


def test_a_home_folder_path_is_expanded_in_every_path_key(saved, tmp_path, monkeypatch):
    """resume= and agents.evaluate's paths expanded ~; runs_root='~/runs' made a folder named ~ in the working
    folder, and config=~/config.yaml was "no such file"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "config.yaml").write_text(saved.read_text())
    cfg = load_config(["runs_root='~/runs'", "run_dir='~/one'"])
    assert (cfg.runs_root, cfg.run_dir) == (str(tmp_path / "runs"), str(tmp_path / "one"))
    assert from_yaml_file("~/config.yaml", ["seed=5"]).seed == 5


def test_an_option_an_older_config_lacks_may_be_set(saved, tmp_path):
    """A config.yaml from before an env option existed: `env.kwargs.<that option>=` was "unknown config key" (only
    `+env.kwargs.` took it); a typo is still refused with the env's options."""
    import yaml

    older = yaml.safe_load(saved.read_text())
    del older["env"]["kwargs"]["world_seed"]
    (tmp_path / "older.yaml").write_text(yaml.safe_dump(older))
    assert from_yaml_file(str(tmp_path / "older.yaml"), ["env.kwargs.world_seed=2"]).env.kwargs.world_seed == 2
    with pytest.raises(ConfigError, match="has no option 'world_sed'; did you mean 'world_seed'"):
        from_yaml_file(str(tmp_path / "older.yaml"), ["env.kwargs.world_sed=2"])
