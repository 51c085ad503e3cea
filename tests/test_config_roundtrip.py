"""Round trips of an accepted config: a run's config.yaml read back by `config=` (from_yaml_file), the checkpoint's
config read back by resume= / agents.evaluate (validate of the saved container), and the values a sweep writes to
best_overrides.txt read back by Hydra's override grammar. Hypothesis; no training."""

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from agents.config import ConfigError, load_config, to_yaml, validate
from agents.config_file import from_yaml_file, read_override_value
from agents.tune_overrides import override_value as write_override
from tests.examples import examples

SETTINGS = settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))


def hydra_text(text: str) -> str:
    """A text as a quoted Hydra value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=10)
VALUES = {
    "seed": st.integers(0, 2**32 - 1).map(str),
    "train.lr": st.floats(1e-6, 10).map(repr),
    "train.amp": st.sampled_from(["true", "false", "yes", "no", "on", "off", "1", "0"]),
    "train.episodes": st.just("null") | st.integers(0, 10**6).map(str),
    "model.dropout": st.floats(0, 0.99).map(repr),
    "memory.copy": st.floats(0, 0.99).map(repr),
    "memory.key_lags": st.sampled_from(["1:0", "3:0+4:1+5:2", "2:1"]),
    "runs_root": TEXT.map(hydra_text),
    "run_dir": TEXT.map(hydra_text),
    "+env.kwargs.render_mode": st.sampled_from(["ansi", "null"]),  # an option the env's config file lacks
}
CONTINUAL_SHIFT = {"env.kwargs.key_overlap": st.floats(0, 1).map(repr),
                   "env.kwargs.shift_window": st.just("null") | st.integers(1, 4).map(str),
                   "env.kwargs.task_visible": st.sampled_from(["true", "false"])}


@st.composite
def accepted_overrides(draw):
    env = draw(st.sampled_from(["ContinualShift-v0", "LongDependency-v0", "NeedleRecall-v0"]))
    values = VALUES | (CONTINUAL_SHIFT if env == "ContinualShift-v0" else {})
    keys = draw(st.lists(st.sampled_from(sorted(values)), max_size=5, unique=True))
    agent = draw(st.sampled_from(["memnet", "transformer", "lstm", "gru"]))
    return [f"env={env}", f"agent={agent}"] + [f"{k}={draw(values[k])}" for k in keys]


@SETTINGS
@given(accepted_overrides())
def test_a_saved_config_loads_back_to_the_same_config(tmp_path_factory, overrides):
    """config.yaml -> config= and the checkpoint's container -> resume= / agents.evaluate give the same config (the
    saved run_dir and resume name the old run: config= drops them). An env option the env's config file lacks
    (+env.kwargs.render_mode) made config= refuse the file as 'unknown config key'."""
    try:
        cfg = load_config(overrides)
    except ConfigError:
        return
    want = OmegaConf.to_container(cfg, resolve=True)
    assert OmegaConf.to_container(validate(OmegaConf.create(want)), resolve=True) == want
    path = tmp_path_factory.mktemp("saved") / "config.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    back = OmegaConf.to_container(from_yaml_file(str(path), []), resolve=True)
    assert back == {**want, "run_dir": None, "resume": None}


def test_an_env_option_its_config_file_lacks_survives_config_yaml(tmp_path):
    cfg = load_config(["+env.kwargs.render_mode=ansi", "env.kwargs.num_tasks=3"])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    back = from_yaml_file(str(tmp_path / "config.yaml"), ["seed=2"])
    assert back.env.kwargs.render_mode == "ansi" and back.env.kwargs.num_tasks == 3 and back.seed == 2


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


@settings(max_examples=examples(300), deadline=None)
@given(st.booleans() | st.none() | st.integers() | st.floats() | st.text(max_size=12).filter(lambda t: "${" not in t))
@example("A\n")  # a name ending in a newline was written bare (the regex's $ matched before it); Hydra refused it
@example("\\\n")  # a backslash before a final newline was doubled ($ again): it read back as two
def test_a_value_written_as_an_override_reads_back_the_same(value):
    """best_overrides.txt and a benchmark's probes write values with tune_overrides.override_value. A backslash was
    doubled where Hydra does not undo it ('\\0' read back as '\\\\0'), and non-ASCII letters went unquoted, which
    Hydra's grammar refuses ('A²', a path like /home/josé/corpus.txt)."""
    text = write_override(value)
    assert same(read_override_value(text, "value"), value), text


@SETTINGS
@given(accepted_overrides())
@example(["env=ContinualShift-v0", "agent=memnet", "run_dir='´'"])  # printed bare: refused when copied back
@example(["env=NeedleRecall-v0", "agent=gru", "runs_root='a=b'", "memory.key_lags=3:0"])
def test_the_values_help_prints_are_the_config_when_given_back(overrides):
    """`python -m agents.run --help key=value ...` prints every key with the value that run would use, as
    key=value lines to copy: given back (after env= and agent=), they make that config."""
    from agents.run_config import help_text

    try:
        cfg = load_config(overrides)
    except ConfigError:
        return
    items = [line.strip() for line in help_text(overrides).split("keys (defaults):")[1].strip().splitlines()]
    own = dict(item.split("=", 1) for item in items if item.startswith(("env=", "agent=")))  # the groups' choices
    shipped = set(map(str, load_config([f"env={own['env']}"]).env.kwargs))  # an option the file lacks: `+`
    back = [f"env={own['env']}", f"agent={own['agent']}"] + [
        f"+{item}" if item.startswith("env.kwargs.") and item.split("=")[0][len("env.kwargs."):] not in shipped
        else item for item in items if not item.startswith(("env=", "agent="))]
    assert OmegaConf.to_container(load_config(back), resolve=True) == OmegaConf.to_container(cfg, resolve=True)
