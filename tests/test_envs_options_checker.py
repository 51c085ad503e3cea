"""Hypothesis over env constructor options (the strategies of tests/test_envs_options.py, and each preset with
options on top): any valid combination passes Gymnasium's env checker without a warning, and a seed fixes the whole
stream, scalar and vector, through an episode boundary; `gymnasium.make` of an option the env lacks is one
TypeError line that names it."""

import math
import numbers
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from envs import options
from tests.examples import examples
from tests.test_envs_options import continual_shift_options, long_dependency_options, needle_recall_options

SETTINGS = settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = {"LongDependency-v0": long_dependency_options(), "ContinualShift-v0": continual_shift_options(),
           "NeedleRecall-v0": needle_recall_options()}


def stream(env_id, options, seed, steps, actions):
    """(obs, reward, terminated, info's distance) of `steps` steps after reset(seed), the env made with options."""
    env = gym.make(env_id, **options)
    rows = [env.reset(seed=seed)[0]]
    for t in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(actions[t % len(actions)]))
        rows.append((obs, reward, terminated, truncated, sorted(info.items())))
        if terminated or truncated:
            rows.append(env.reset()[0])
    return rows


@pytest.mark.parametrize("env_id", list(OPTIONS))
def test_valid_options_pass_the_env_checker_and_a_seed_fixes_the_stream(env_id):
    @SETTINGS
    @given(options=OPTIONS[env_id], seed=st.integers(0, 2**32 - 3), data=st.data())
    def check(options, seed, data):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checker warning (dtype, bounds, seeding) fails the example
            env = gym.make(env_id, **options)
            check_env(env.unwrapped, skip_render_check=True)
        steps = env.unwrapped.episode_length + 2  # past the first episode's end: the next reset is seeded too
        actions = data.draw(st.lists(st.integers(0, env.unwrapped.vocab_size - 1), min_size=1, max_size=5))
        first, again = (stream(env_id, options, seed, steps, actions) for _ in range(2))
        assert len(first) == len(again) and all(_same(a, b) for a, b in zip(first, again, strict=True))
        lanes = [gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **options)
                 for _ in range(2)]
        obs = [venv.reset(seed=seed)[0] for venv in lanes]
        for _ in range(steps):
            np.testing.assert_array_equal(obs[0], obs[1])
            obs = [venv.step(np.zeros(2, dtype=np.int64))[0] for venv in lanes]
        np.testing.assert_array_equal(obs[0], obs[1])

    check()


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("preset", [i for i in envs.ENV_IDS if envs.ENV_IDS[i][1]])
def test_a_preset_with_a_valid_option_on_top_passes_the_checker(preset):
    """A preset's own options, then the user's: the stream of the base env made with both."""
    base = next(i for i, (target, options) in envs.ENV_IDS.items() if target == envs.ENV_IDS[preset][0] and not options)
    extra = {"LongDependency-v0": {"queries_per_episode": 3}, "ContinualShift-v0": {"trials_per_episode": 7},
             "NeedleRecall-v0": {"answer_length": 2}}[base]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(preset, **extra).unwrapped, skip_render_check=True)
    steps = gym.make(preset, **extra).unwrapped.episode_length + 2
    got, want = stream(preset, extra, 5, steps, [1, 2]), stream(base, {**envs.ENV_IDS[preset][1], **extra}, 5, steps,
                                                                [1, 2])
    assert len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("env_id", list(OPTIONS))
def test_an_option_the_env_lacks_is_one_line_naming_it(env_id):
    @SETTINGS
    @given(name=st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True))
    def check(name):
        try:
            gym.make(env_id, **{name: 1})
        except (TypeError, ValueError) as exc:
            assert "\n" not in str(exc) and name in str(exc), str(exc)

    check()


ANY = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) \
    | st.lists(st.integers(), max_size=3) \
    | st.sampled_from([np.int64(3), np.float64(2.0), np.bool_(True), np.array([1, 2]), np.array([[1]]), 2**70])


@SETTINGS
@given(value=ANY, low=st.integers(-3, 3), span=st.none() | st.integers(0, 5))
def test_option_checkers_take_exactly_the_documented_values(value, low, span):
    """envs/options.py, the checks of every constructor option: an int (numpy's too, never a bool or a float) in
    range, a finite real in range, a real bool, a non-empty list of such ints; anything else one ValueError line
    naming the option and the value given."""
    high = None if span is None else low + span
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    checks = [
        (lambda: options.check_int("n", value, low, high),
         isinstance(value, numbers.Integral) and real and low <= value and (high is None or value <= high)),
        (lambda: options.check_float("x", value, low, low + 5),
         real and math.isfinite(value) and low <= value <= low + 5),
        (lambda: options.check_bool("flag", value), isinstance(value, (bool, np.bool_))),
        (lambda: options.check_seed(value), isinstance(value, numbers.Integral) and real and 0 <= value < 2**32),
        (lambda: options.check_int_tuple("d", value, low, high),
         isinstance(value, (list, np.ndarray)) and np.ndim(value) == 1 and len(value) > 0 and all(
             isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and low <= v
             and (high is None or v <= high) for v in np.asarray(value).tolist())),
    ]
    for check, valid in checks:
        try:
            got = check()
        except ValueError as exc:
            assert not valid and "\n" not in str(exc) and "got" in str(exc), (value, str(exc))
            continue
        assert valid, (value, got)
        if isinstance(got, tuple):
            assert got == tuple(sorted(set(np.asarray(value).tolist())))
        else:
            assert got == value and type(got) in (int, float, bool)


@pytest.mark.parametrize("env_id", list(OPTIONS))
def test_any_reset_options_are_an_episode_or_one_value_error_line(env_id):
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    tasks = env.num_tasks

    @SETTINGS
    @given(opts=st.none() | st.dictionaries(st.sampled_from(["phase", "task_id", "seed", "x"]),
                                            st.sampled_from(["train", "eval", "Eval", "", None, True, 1.0, -1])
                                            | st.integers(-2, tasks + 1), max_size=3))
    def check(opts):
        valid = opts is None or (set(opts) <= {"phase", "task_id"} and (
            opts.get("phase", "train") == "train" and "task_id" not in opts or opts.get("phase") == "eval" and (
                type(opts.get("task_id", 0)) is int and 0 <= opts.get("task_id", 0) < tasks)))
        try:
            obs, info = env.reset(seed=1, options=opts)
        except ValueError as exc:
            assert not valid and "\n" not in str(exc), (opts, str(exc))
            return
        assert valid, opts
        assert env.observation_space.contains(obs)

    check()
