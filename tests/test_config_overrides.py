"""`key=value` overrides of agents.run / agents.tune, adversarially: every bad one is one ConfigError line that
names it (exit code 2 at the CLI, no traceback, no run folder), and accepted spellings mean what they say. No
training here: the config is composed and validated, at most the env is built (one lane)."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import run
from agents.config import ConfigError, load_config
from agents.episodes import make_vector_env
from tests.examples import examples

ENVS = ("ContinualShift-Gradual-v0, ContinualShift-v0, LongDependency-Easy-v0, LongDependency-Hard-v0, "
        "LongDependency-v0, NeedleRecall-Hard-v0, NeedleRecall-v0")


@pytest.mark.parametrize("override, message", [
    # Hydra's grammar errors named no fix (LexerNoViableAltException: seed=~, "mismatched input '='")
    ("seed=~", "'seed=~' is not a key=value override; write key=value (e.g. seed=3) and quote a value"),
    ("runs_root=é", "'runs_root=é' is not a key=value override; "),
    ("runs_root=a=b", "'runs_root=a=b' is not a key=value override (mismatched input '=' expecting <EOF>); "),
    ("seed==3", "'seed==3' is not a key=value override (extraneous input '='); write key=value"),
    ("=3", "'=3' is not a key=value override; write key=value"),  # was "Config group override must be a string"
    # deletions fell back to the schema's defaults (train.lr 3e-3 instead of MemNet's 1e-3, ContinualShift's
    # memory settings gone with ~env), or gave a misleading line (~memory.dim: "memory.dim=128 must equal ...")
    ("~train.lr", "~train.lr: a key cannot be deleted (~key): every key has a value; set it with key=value"),
    ("~env", "~env: a key cannot be deleted"),
    ("~memory.dim", "~memory.dim: a key cannot be deleted"),
    # never read by the compose API: the run went to runs/ anyway
    ("hydra.run.dir=/tmp/x", "hydra.run.dir=/tmp/x: Hydra's own settings (hydra.*) are not used here"),
    ("hydra/launcher=basic", "hydra/launcher=basic: Hydra's own settings"),
    # ran the plain abrupt ContinualShift under the Gradual preset's name, or a "transformer" with MemNet's lr
    ("env.id=ContinualShift-Gradual-v0", f"env.id=ContinualShift-Gradual-v0: choose the env with env=<name> ({ENVS})"),
    ("agent.name=transformer", "agent.name=transformer: choose the agent with agent=<name> (gru, lstm, memnet"),
    # sweeps pointed at --multirun, which agents.run does not take
    ("seed=range(3)", "seed=range(3): one value per key (a comma list, range() or choice() is a sweep"),
    ("seed=1,2", "seed=1,2: one value per key"),
    ("env=null", f"unknown env None; choose one of: {ENVS}"),  # was "Config group override must be a string"
    ("env=[ContinualShift-v0,NeedleRecall-v0]", "unknown env ['ContinualShift-v0', 'NeedleRecall-v0']; choose"),
    ("agent=${seed}", "unknown agent '${seed}'; choose one of: gru, lstm, memnet, transformer"),
    ("+seed=4", "+seed= adds a key, and seed is there already; set it with seed=<value>"),
    # an env option's typo named no option (agents.evaluate's listed them)
    ("env.kwargs.num_task=3", "unknown config key 'env.kwargs.num_task': ContinualShift-v0 has no option 'num_task'; "
                              "did you mean 'num_tasks'? its options: num_tasks, episodes_per_task, "),
    ("env.kwargs.nothing_like_it=3", "ContinualShift-v0 has no option 'nothing_like_it'; its options: num_tasks, "),
    # an option the env's file does not set: "has no option 'render_mode'; did you mean 'render_mode'? its options:
    # ..., render_mode"
    ("env.kwargs.render_mode=ansi", "env.kwargs.render_mode is an option of ContinualShift-v0 that its config does "
                                    "not set; add it with +env.kwargs.render_mode=<value>"),
    # interpolations that do not resolve named no key
    ("seed=${nope}", "seed=${nope}: Interpolation key 'nope' not found"),
    ("seed=${oc.env:MEMSTREAM_NO_SUCH_VARIABLE}", "seed=${oc.env:MEMSTREAM_NO_SUCH_VARIABLE}: KeyError raised"),
    ("model.dim=${memory.dim}", "model.dim=${memory.dim}: Recursive interpolation detected"),
    # an escaped interpolation resolved to a literal '${x}', which the next read took for an interpolation again:
    # a traceback (InterpolationKeyError) at the run folder
    (r"run_dir=/tmp/a\${x}b", "run_dir='/tmp/a${x}b': a value may not hold a literal '${'"),
    # torch took it, then the run failed to start a thread ("can't start new thread", or an overflow)
    ("train.threads=100000", "train.threads=100000: must be in [0, 1024]"),
    ("train.threads=99999999999999999999", "train.threads=99999999999999999999: must be in [0, 1024]"),
    ("memory.store_threads=99999999999999999999", "memory.store_threads=99999999999999999999: must be in [1, 1024]"),
    # one past the ends of the ranges README gives (a decay of 1 never moves the REINFORCE baseline, the chunk is at
    # most model.window, eval_every=0 is a modulo by zero in agents/run.py)
    ("train.baseline_decay=1", "train.baseline_decay=1.0: must be in [0, 1)"),
    ("train.chunk=65", "train.chunk=65: must be in [1, model.window=64]"),
    ("seed=4294967296", "seed=4294967296: must be in [0, 2^32)"),
    ("train.eval_every=0", "train.eval_every=0: must be >= 1"),
    ("train.lr=0", "train.lr=0.0: must be > 0"),
    ("train.episodes=-1", "train.episodes=-1: must be >= 0"),
])
def test_bad_overrides_are_one_line_naming_them(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config([override])
    text = str(caught.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("argv, message", [
    (["seed=a=b"], "'seed=a=b' is not a key=value override"),
    (["~seed"], "~seed: a key cannot be deleted"),
    (["env.id=ContinualShift-Gradual-v0"], "env.id=ContinualShift-Gradual-v0: choose the env with env=<name>"),
    ([r"runs_root=\${seed}"], "runs_root='${seed}': a value may not hold a literal '${'"),  # was runs_root='0'
    (["+env.kwargs.num_envs=3"], "env.kwargs.num_envs: the env's lanes are train.lanes"),
])
def test_the_cli_refuses_them_with_exit_code_2_and_no_run_folder(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert run.main(["train.episodes=0", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, key, value", [
    (["seed=010"], "seed", 10),  # Hydra reads 010 as text, the int field converts it (YAML 1.1 said 8)
    (["seed=1_000"], "seed", 1000),
    (["seed='3'"], "seed", 3),
    (["seed= 3"], "seed", 3),
    (["seed=1", "seed=2"], "seed", 2),  # a repeated key: the last one wins, as in Hydra
    (["++seed=4"], "seed", 4),
    (["seed=${train.lanes}"], "seed", 16),
    (["train.lr=1e-3"], "train.lr", 0.001),
    (["train.lr=1"], "train.lr", 1.0),
    (["train.amp=yes"], "train.amp", True),
    (["train.amp=off"], "train.amp", False),
    (["train.episodes=null"], "train.episodes", None),
    (["memory.key_lags=3:0"], "memory.key_lags", "3:0"),  # YAML 1.1 read 3:0 as 180
    (["runs_root='a b=c'"], "runs_root", "a b=c"),
    (["runs_root='é'"], "runs_root", "é"),
    (["env.kwargs.num_tasks=3"], "env.kwargs.num_tasks", 3),
    (["+env.kwargs.render_mode=ansi"], "env.kwargs.render_mode", "ansi"),
])
def test_accepted_spellings_mean_what_they_say(overrides, key, value):
    from omegaconf import OmegaConf

    got = OmegaConf.select(load_config(overrides), key)
    assert got == value and type(got) is type(value), got


KEYS = ["seed", "train.lr", "train.lanes", "train.amp", "train.episodes", "model.dropout", "runs_root", "device",
        "memory.key_lags", "memory.reset", "train.threads", "env.kwargs.num_tasks", "env.kwargs.key_overlap",
        "env.kwargs.task_visible", "env.kwargs.shift", "env.kwargs.distances", "env"]
SPELLINGS = ["yes", "no", "on", "off", "null", "~", ".inf", "nan", "-inf", "1e3", "0x10", "010", "1_000", "-0.0",
             "0", "1", "3", "true", "99999999999999999999", "-1", "[1,2]", "{a:1}", "''", "' '", "'a=b'", "a b",
             "é", "${seed}", "${nope}", "${", "1,2", "[1e30]", "[99999999999999999999]", "gradual", "NeedleRecall-v0",
             "LongDependency-v0", "3:0"]


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["", "+", "++", "~"]), st.sampled_from(KEYS),
                          st.sampled_from(SPELLINGS) | st.text(max_size=6)), min_size=1, max_size=3))
def test_any_override_is_accepted_or_one_config_error_line(items):
    """Never another exception: not from Hydra, OmegaConf, the checks, nor from building the env (one lane)."""
    overrides = [f"{prefix}{key}" if prefix == "~" else f"{prefix}{key}={value}" for prefix, key, value in items]
    try:
        cfg = load_config(overrides)
        make_vector_env(cfg.env.id, 1, dict(cfg.env.kwargs)).close()
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc), (overrides, str(exc))


def test_an_env_options_typo_names_the_options_of_the_env_chosen():
    with pytest.raises(ConfigError, match=r"^unknown config key 'env.kwargs.delays': NeedleRecall-v0 has no option "
                                          r"'delays'; did you mean 'delay'\? its options: vocab_size, .*delay"):
        load_config(["env=NeedleRecall-v0", "env.kwargs.delays=3", "env.kwargs.delay=2"])


def test_validate_refuses_an_unknown_top_level_key():
    """The typed schema refuses what the command line's and a config file's own checks would: a saved config read
    back on resume (agents/run_config.py) and a sweep's saved trials (agents/tune_saved.py) reach `validate` only."""
    from omegaconf import OmegaConf

    from agents.config import compose, validate

    saved = OmegaConf.to_container(compose([]), resolve=True)
    saved["sead"] = 3
    with pytest.raises(ConfigError, match="unknown config key 'sead'"):
        validate(OmegaConf.create(saved))


@pytest.mark.parametrize("env, key", [("LongDependency-v0", "distances"), ("NeedleRecall-v0", "delay")])
def test_plus_on_an_option_the_env_file_sets_is_refused_as_in_a_config_file(env, key, tmp_path):
    """`+env.kwargs.distances=[1,2]` was merged on a fresh run (Hydra composes the env's file after the overrides),
    while `config=` refused it, and `+seed=3` is refused on both; `++` sets it, an option the file lacks is added."""
    message = (f"+env.kwargs.{key}= adds a key, and env.kwargs.{key} is there already; set it with "
               f"env.kwargs.{key}=<value>")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config([f"env={env}", f"+env.kwargs.{key}=[1,2]" if key == "distances" else f"+env.kwargs.{key}=3"])
    assert load_config([f"env={env}", f"++env.kwargs.{key}=3"]).env.kwargs[key] == 3
    assert load_config([f"env={env}", "+env.kwargs.render_mode=ansi"]).env.kwargs.render_mode == "ansi"
