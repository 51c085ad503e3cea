"""Hypothesis over the YAML files a user hands in: a run's config.yaml (`config=`), a benchmark suite file
(`suite=<file>.yaml`) and a sweep file's fields. Each is a real file with one key changed to any YAML value, one key
removed or one added: the file is taken (and what is taken validates to itself) or refused in one ConfigError line,
never another exception. No runs."""

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from agents.benchmark_suite import load_suite
from agents.config import ConfigError, load_config, to_yaml, validate
from agents.config_file import from_yaml_file
from agents.config_messages import error_line
from agents.run_config import config_for
from agents.tune_overrides import merge_overrides
from agents.tune_space import load_sweep, make_plan
from tests.examples import examples

SETTINGS = settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
SCALAR = st.none() | st.booleans() | st.integers(-3, 70) | st.integers() | st.floats() | st.sampled_from(
    ["", "~", "${seed}", "${nope}", "1:0", "gradual", "memnet", "[", "é", "010", "1e3", ".inf", "yes"]) \
    | st.text(max_size=5)
YAML_VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4) | st.sampled_from(["agent", "overrides", "seeds"]),
                                            inner, max_size=3), max_leaves=6)


def paths(doc, prefix=()):
    """Every path to a value of a nested mapping / list document."""
    found = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        found += paths(value, (*prefix, key))
    return found


@st.composite
def edited(draw, doc: dict):
    """`doc` with one value replaced, one key removed, or one key added (a deep copy)."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    path = draw(st.sampled_from(paths(doc)))
    *parents, last = path
    holder = doc
    for part in parents:
        holder = holder[part]
    action = draw(st.sampled_from(["set", "drop", "add"]))
    if action == "drop":
        holder.pop(last) if isinstance(holder, (dict, list)) else None
    elif action == "add" and isinstance(holder, dict):
        holder[draw(st.text(min_size=1, max_size=6))] = draw(YAML_VALUE)
    else:
        holder[last] = draw(YAML_VALUE)
    return doc


def one_line(exc: ConfigError) -> str:
    line = error_line(exc)
    assert line.strip() != "error:" and "\n" not in line, line
    return line


def same(a, b) -> bool:
    """Equal, a NaN equal to a NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


def written_and_read(path, doc, read):
    """`doc` written to `path` as YAML and given to `read` (the file's name); None where `read` refused it in one
    ConfigError line (any other error fails the test)."""
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        return read(str(path))
    except ConfigError as exc:
        one_line(exc)
        return None


RUN_CONFIG = OmegaConf.to_container(load_config(["env=NeedleRecall-v0"]), resolve=True)


@SETTINGS
@given(edited(RUN_CONFIG))
def test_an_edited_run_config_file_is_a_config_or_one_line(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    if (cfg := written_and_read(path, doc, lambda name: from_yaml_file(name, []))) is None:
        return
    want = OmegaConf.to_container(cfg, resolve=True)
    assert same(OmegaConf.to_container(validate(OmegaConf.create(want)), resolve=True), want)  # as resume= reads it
    (path.parent / "again.yaml").write_text(to_yaml(cfg), encoding="utf-8")  # a run of it saves this config.yaml
    assert same(OmegaConf.to_container(from_yaml_file(str(path.parent / "again.yaml"), []), resolve=True),
                {**want, "run_dir": None, "resume": None})


@SETTINGS
@given(st.text(max_size=30) | st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_file_is_a_config_or_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        from_yaml_file(str(path), [])
    except ConfigError as exc:
        one_line(exc)


with open(str(__import__("importlib.resources").resources.files("agents.conf") / "benchmark" / "quick.yaml"),
          encoding="utf-8") as _file:
    QUICK = yaml.safe_load(_file)


@SETTINGS
@given(edited(QUICK))
def test_an_edited_suite_file_is_a_suite_or_one_line(tmp_path_factory, doc):
    if (suite := written_and_read(tmp_path_factory.mktemp("suite") / "suite.yaml", doc, load_suite)) is None:
        return
    assert 1 <= suite.seeds and suite.envs and suite.variants
    assert all(isinstance(o, str) and "=" in o for o in suite.overrides)


def test_a_probe_variant_that_is_not_a_name_is_one_line(tmp_path):
    """OmegaConf let `variants: [[memnet]]` into the list of names: `python -m agents.benchmark suite=<file>` was a
    TypeError traceback (unhashable type: 'list')."""
    doc = yaml.safe_load(yaml.safe_dump(QUICK))
    doc["envs"]["NeedleRecall-v0"]["probes"]["variants"] = [["memnet"]]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_suite(str(tmp_path / "suite.yaml"))
    assert str(refused.value) == ("envs.NeedleRecall-v0.probes.variants: a list of variant names (variants: "
                                  "[memnet]); got [['memnet']]")


SMOKE = load_sweep("smoke").to_dict()


@SETTINGS
@given(edited({k: v for k, v in SMOKE.items() if k != "name"}))
def test_an_edited_sweep_file_is_a_plan_or_one_line(doc):
    try:
        plan = make_plan("smoke", doc)
    except ConfigError as exc:
        one_line(exc)
        return
    assert plan.search_space and plan.num_samples >= 1 and plan.mode in ("max", "min")
    assert make_plan("smoke", {k: v for k, v in plan.to_dict().items() if k != "name"}) == plan  # as resume= reads it


EXTRA = {"seed": st.integers(0, 2**31).map(str), "train.lr": st.floats(1e-5, 1).map(repr),
         "train.episodes": st.just("null") | st.integers(0, 50).map(str), "model.dim": st.sampled_from(["16", "32"]),
         "memory.slots": st.integers(0, 16).map(str), "memory.reset": st.sampled_from(["never", "episode", "task"]),
         "memory.key_lags": st.sampled_from(["1:0", "2:0+3:1"]), "train.amp": st.sampled_from(["true", "off"]),
         "runs_root": st.sampled_from(["2026_12_03", "'a b'", "runs"]),
         "++env.kwargs.render_mode": st.just("ansi")}  # ++: set or add (the saved file may hold it)


@st.composite
def fresh_and_extra(draw):
    from tests.test_config_roundtrip import accepted_overrides

    keys = draw(st.lists(st.sampled_from(sorted(EXTRA)), min_size=1, max_size=4, unique=True))
    return draw(accepted_overrides()), [f"{key}={draw(EXTRA[key])}" for key in keys]


@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(fresh_and_extra())
def test_config_file_then_overrides_is_the_command_line_with_both(tmp_path_factory, case):
    """agents.run's `config=<a run's config.yaml> key=value ...` is the run that the saved command line with those
    overrides after it starts (the saved run_dir and resume aside): the same config, or both refused."""
    saved, extra = case
    try:
        cfg = load_config(saved)
    except ConfigError:
        return
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    try:
        want = OmegaConf.to_container(config_for(merge_overrides(saved, extra))[0], resolve=True)  # extra's win
    except ConfigError:
        want = None
    try:
        got = OmegaConf.to_container(config_for([f"config={path}", *extra])[0], resolve=True)
    except ConfigError as exc:
        assert want is None, one_line(exc)
        return
    assert want is not None and same(got, {**want, "run_dir": None, "resume": None}), (saved, extra)
