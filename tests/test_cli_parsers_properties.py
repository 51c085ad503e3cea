"""Hypothesis over the command-line parsers that are not Hydra's: the benchmark scripts' number flags, their
`--variant NAME:KEY=VALUE,...`, agents.benchmark's `key=value` and comma lists, agents.tune's own keys and
agents.evaluate's sweeps. A valid line means what it says; anything else is one line (argparse's usage line or one
ConfigError), never a traceback. No runs."""

import argparse
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.benchmark import parse_args
from agents.benchmark_suite import LIMITS, comma_list
from agents.cli_args import MAX_TIMED_S, non_negative_int, positive_int, thread_count, timed_seconds
from agents.config import ConfigError
from agents.config_messages import error_line
from agents.evaluate_args import override_grid
from agents.tune_command_line import parse_command_line
from agents.tune_overrides import override_value
from memory.config import MAX_THREADS
from tests.examples import examples
from tests.scripts import load_script

SETTINGS = settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMBER_TEXT = st.integers(-5, 2000).map(str) | st.floats().map(repr) | st.sampled_from(
    ["", " 3", "3 ", "1_0", "0x10", "1e2", "inf", "nan", "+4", "-0", "٣", "3.0", "True"]) | st.text(max_size=4)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8).filter(
    lambda t: "${" not in t)
SCALAR = st.booleans() | st.none() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) \
    | TEXT
VALUE = SCALAR | st.lists(SCALAR, min_size=1, max_size=3) | st.lists(st.lists(SCALAR, min_size=1, max_size=2),
                                                                     min_size=1, max_size=2)


def one_line(refusal) -> str:
    """The line an entry point prints for a refusal (a ConfigError: its `error:` line, an echoed newline escaped;
    argparse's message as it prints it): one line, not empty."""
    text = error_line(refusal) if isinstance(refusal, ConfigError) else refusal
    assert text.strip() and "\n" not in text.strip(), text
    return text


def reference_number(text: str, kind):
    """What Python makes of the text, or None."""
    try:
        return kind(text)
    except ValueError:
        return None


@SETTINGS
@given(text=NUMBER_TEXT)
def test_number_flags_take_exactly_the_numbers_in_their_range(text):
    """positive_int, non_negative_int, thread_count (--threads), timed_seconds (--seconds): the value Python reads
    when it lies in the flag's range, else argparse's one-line ArgumentTypeError (the usage line, exit 2)."""
    flags = [(positive_int, int, lambda v: v >= 1), (non_negative_int, int, lambda v: v >= 0),
             (thread_count, int, lambda v: 1 <= v <= MAX_THREADS),
             (timed_seconds, float, lambda v: 0 < v <= MAX_TIMED_S)]
    for flag, kind, in_range in flags:
        want = reference_number(text, kind)
        try:
            got = flag(text)
        except argparse.ArgumentTypeError as exc:
            assert want is None or math.isnan(want) or not in_range(want), (flag.__name__, text)
            one_line(str(exc))
            continue
        assert got == want and type(got) is kind and in_range(got), (flag.__name__, text, got)


BENCH = load_script("agents")
KEYS = ["memory.slots", "memory.store", "train.lr", "env.kwargs.distances", "env.kwargs.haystack_path",
        "model.dim", "memory.key_lags", "env.kwargs.shift"]


class _Usage(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the usage line and exits 2: keep the line for the test
        raise SystemExit(one_line(message))


@SETTINGS
@given(name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=6).filter(
    lambda n: ":" not in n and n.strip()), keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
    data=st.data())
@example(name="x", keys=["env.kwargs.haystack_path"], data=None)  # a file name with a comma: 'a,b.txt'
def test_a_variant_reads_back_as_its_overrides(name, keys, data):
    """`--variant NAME:` and overrides written with override_value (best_overrides.txt's writer) joined by commas:
    the name and those overrides, one per key. A comma inside a quoted text or a nested list split the override
    ('a,b.txt' became two, refused as not KEY=VALUE)."""
    values = ["a,b.txt"] if data is None else [data.draw(VALUE) for _ in keys]
    overrides = [f"{key}={override_value(value)}" for key, value in zip(keys, values, strict=True)]
    got = BENCH.parse_variant(_Usage(), f"{name}:{','.join(overrides)}", set())
    assert got == (name, overrides)


@SETTINGS
@given(st.text(max_size=24))
def test_any_variant_text_is_a_variant_or_one_usage_line(text):
    try:
        name, overrides = BENCH.parse_variant(_Usage(), text, set())
    except SystemExit:
        return
    assert name.strip() and overrides and all("=" in o for o in overrides)


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=6).filter(
    lambda n: "," not in n)


@SETTINGS
@given(names=st.lists(NAMES, min_size=1, max_size=4))
def test_a_comma_list_of_names_reads_back_or_is_refused_for_a_repeat(names):
    """envs= / agents= of agents.benchmark: the names in order; a name given twice is one ConfigError line."""
    try:
        got = comma_list("envs", ",".join(names))
    except ConfigError as exc:
        assert len(set(names)) < len(names), one_line(exc)
        return
    assert got == names


BENCHMARK_ARGS = st.sampled_from(["suite=quick", "seeds=2", "seeds=0", "seeds=10001", "workers=1", "workers=x",
                                  "envs=a,,b", "agents=", "agents=memnet", "out=", "out='~/b'", "seed=1", "env=x",
                                  "resume=a", "train.episodes=4", "device=cpu", "=x", "x", "foo=1", "seeds=1e3"])


@SETTINGS
@given(st.lists(BENCHMARK_ARGS | st.text(max_size=8), max_size=4))
def test_any_benchmark_command_line_is_parsed_or_one_config_error_line(argv):
    try:
        opts, overrides = parse_args(argv)
    except ConfigError as exc:
        one_line(exc)
        return
    assert all(1 <= opts[k] <= LIMITS[k] for k in ("seeds", "workers") if k in opts)
    assert set(overrides) <= set(argv) and opts["suite"]


TUNE_ARGS = st.sampled_from(["sweep=smoke", "num_samples=2", "num_samples=0", "num_samples=1.5", "num_samples=true",
                             "resume=", "resume=a", "sweep.mode=min", "max_failures=2", "scheduler.type=fifo",
                             "seed=3", "+train.lanes=2", "train.lanes=4", "x", "=", "sweep.search_space.a=grid:[1]"])


@SETTINGS
@given(st.lists(TUNE_ARGS | st.text(max_size=8), max_size=4))
def test_any_tune_command_line_is_split_or_one_config_error_line(argv):
    """Each argument lands in exactly one place: the sweep, num_samples (an integer >= 1), resume (alone), a sweep.*
    edit or a run override."""
    try:
        cli = parse_command_line(argv)
    except ConfigError as exc:
        one_line(exc)
        return
    own = [a for a in argv if a.split("=", 1)[0] in ("sweep", "num_samples", "resume")]
    assert len(own) + len(cli.sweep_overrides) + len(cli.run_overrides) == len(argv)
    assert cli.num_samples is None or cli.num_samples >= 1
    assert cli.resume is None or not (cli.sweep_overrides or cli.run_overrides or cli.num_samples)


@SETTINGS
@given(values=st.lists(SCALAR, min_size=1, max_size=4))
@example(values=[None, "0"])  # '0' (quoted) was evaluated as Hydra's QuotedString(text='0'), not the text
@example(values=["a b.txt", "c.txt"])
@example(values=[0, 0.0])  # one setting of a float option: it was evaluated twice
@example(values=[1, True])  # two: a bool option refuses 1, an int option True
def test_an_evaluation_comma_list_is_one_evaluation_per_value(values):
    """agents.evaluate's `env.kwargs.<option>=a,b,c`: one evaluation per value, each the value written; a value
    given twice (1 and 1.0 too) is one ConfigError line (it evaluated the same setting twice)."""
    item = f"env.kwargs.delay={','.join(override_value(v) for v in values)}"
    same = [v == w and (type(v) is type(w) or {type(v), type(w)} == {int, float})  # 1.0 is 1 to a float option,
            for i, v in enumerate(values) for w in values[:i]]  # True is not
    try:
        grid = override_grid([item])
    except ConfigError as exc:
        assert any(same), one_line(exc)
        return
    assert not any(same), grid
    got = [env["delay"] for env, memory in grid]
    assert len(got) == len(values) and all(type(g) is type(v) and g == v for g, v in zip(got, values, strict=True))


def test_a_quoted_item_of_an_evaluation_sweep_is_its_text():
    """`memory.reset='never',task` evaluated memory.reset=QuotedString(text='never', ...) (Hydra's parse object),
    which the memory config refused as not a str; a quoted file name in a list of paths reached the env as one."""
    assert override_grid(["memory.reset='never',task"]) == [({}, {"reset": "never"}), ({}, {"reset": "task"})]
    assert override_grid(["env.kwargs.haystack_path='a b.txt',c.txt"]) == [({"haystack_path": "a b.txt"}, {}),
                                                                             ({"haystack_path": "c.txt"}, {})]
    assert override_grid(["env.kwargs.distances=['1',2],[3]"]) == [({"distances": ["1", 2]}, {}),
                                                                    ({"distances": [3]}, {})]


EVAL_KEYS = ["env.kwargs.delay=", "memory.reset=", "memory.store_threads=", "memory.slots=", "env.kwargs.x=",
             "memory.nope="]
EVAL_VALUES = ["1,2", "range(1,3)", "[1,2]", "choice(a,b)", "${seed}", "interval(0,1)", "never,task", "1,1", "'a,b'",
               "[range(1,2)]", "'never',task"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(EVAL_KEYS), st.sampled_from(EVAL_VALUES) | st.text(max_size=6)),
                max_size=3))
def test_any_evaluation_sweep_is_a_grid_or_one_config_error_line(items):
    try:
        grid = override_grid([key + value for key, value in items])
    except ConfigError as exc:
        one_line(exc)
        return
    assert grid and all(isinstance(env, dict) and isinstance(memory, dict) for env, memory in grid)


@pytest.mark.parametrize("text, overrides", [
    ("x:env.kwargs.haystack_path='a,b.txt'", ["env.kwargs.haystack_path='a,b.txt'"]),
    ("x:env.kwargs.distances=[[1,2],[3]],memory.slots=4", ["env.kwargs.distances=[[1,2],[3]]", "memory.slots=4"]),
    ("x:env.kwargs.m={a: 1, b: 2}", ["env.kwargs.m={a: 1, b: 2}"]),
    ("x:memory.slots=8, train.lr=0.1", ["memory.slots=8", "train.lr=0.1"]),
])
def test_a_variant_splits_at_the_commas_between_overrides_only(text, overrides):
    assert BENCH.parse_variant(_Usage(), text, set()) == ("x", overrides)


@SETTINGS
@given(arg=st.sampled_from(["sweep=smoke", "sweep=memory", "num_samples=3", "num_samples=0", "sweep=nope"]),
       quote=st.sampled_from(["'", '"']))
def test_agents_tune_reads_a_quoted_value_of_its_own_keys_as_hydra_reads_one(arg, quote):
    """`sweep='smoke'` was "unknown sweep \"'smoke'\"" (env='<id>' and every run key take their quotes off)."""
    key, value = arg.split("=", 1)
    assert _outcome(parse_command_line, [f"{key}={quote}{value}{quote}"]) == _outcome(parse_command_line, [arg])


@SETTINGS
@given(arg=st.sampled_from(["seeds=2", "workers=1", "seeds=0", "agents=memnet,gru", "envs=NeedleRecall-v0",
                            "suite=quick", "agents=a,,b"]), quote=st.sampled_from(["'", '"']))
def test_agents_benchmark_reads_a_quoted_value_of_its_own_keys_as_hydra_reads_one(arg, quote):
    """`seeds='2'` was "must be an integer >= 1", `agents='memnet'` not in the suite."""
    key, value = arg.split("=", 1)
    assert _outcome(parse_args, [f"{key}={quote}{value}{quote}"]) == _outcome(parse_args, [arg])


def _outcome(parse, argv):
    """What a parser makes of argv: its result, or its refusal's line with the quotes of the value taken off."""
    try:
        return repr(parse(argv))
    except ConfigError as exc:
        return "refused: " + str(exc).replace("'", "").replace('"', "")


@SETTINGS
@given(arg=st.sampled_from(["threads=2", "threads=0", "threads=x", "device=cpu", "device=auto", "out=e.json"]),
       quote=st.sampled_from(["'", '"']))
def test_agents_evaluate_reads_a_quoted_value_of_its_own_keys_as_hydra_reads_one(tmp_path_factory, arg, quote):
    """`threads='2'` was "threads='2': not an integer" (out= and checkpoint= took their quotes off already)."""
    from agents.evaluate_args import parse

    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # parse checks that it is there; it reads no checkpoint
    key, value = arg.split("=", 1)
    quoted = _outcome(parse, [f"checkpoint={run}", f"{key}={quote}{value}{quote}"])
    assert quoted == _outcome(parse, [f"checkpoint={run}", arg])
