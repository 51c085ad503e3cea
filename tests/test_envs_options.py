"""Hypothesis over constructor options: valid options never crash (and keep the stream's invariants), invalid
ones raise a ValueError that names the option."""

import math
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs  # noqa: F401
from tests.examples import examples

SETTINGS = settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOT_AN_INT = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.booleans(), st.none())
# every seed is an int in [0, 2^32) (envs.options.SEED_LIMIT): numpy took 2^64 and more, a run's seed= stops at 2^32
BAD_SEED = st.integers(max_value=-1) | st.integers(min_value=2**32) | st.floats() | st.booleans()


@st.composite
def long_dependency_options(draw):
    q, c, gap = draw(st.integers(1, 6)), draw(st.integers(0, 3)), draw(st.integers(1, 3))
    distances = draw(st.lists(st.integers(1, 150), min_size=1, max_size=5))
    groups = gap + 1 if c else 1
    return {"queries_per_episode": q, "cross_episode_queries": c, "cross_episode_gap": gap,
            "distances": distances, "vocab_size": 2 + 4 * groups * (q + c) + draw(st.integers(0, 60)),
            "episode_length": max(distances) + 3 + 9 * (q + c) + draw(st.integers(0, 100))}


@st.composite
def continual_shift_options(draw):
    tasks, keys, episodes = draw(st.integers(1, 6)), draw(st.integers(1, 10)), draw(st.integers(1, 4))
    overlap = draw(st.floats(0.0, 1.0))
    shared = int(round(overlap * keys))
    return {"num_tasks": tasks, "keys_per_task": keys, "episodes_per_task": episodes, "key_overlap": overlap,
            "trials_per_episode": draw(st.integers(1, 40)), "shift": draw(st.sampled_from(["abrupt", "gradual"])),
            "shift_window": draw(st.none() | st.integers(1, episodes)), "task_visible": draw(st.booleans()),
            "revisit": draw(st.booleans()), "world_seed": draw(st.integers(0, 2**32 - 1)),
            # ids: BOS/EOS, task tokens, keys, then values and as many fillers (a shared key needs T values)
            "vocab_size": 2 + tasks + shared + tasks * (keys - shared) + 2 * max(2, tasks if shared else 2)
            + draw(st.integers(0, 50))}


@st.composite
def needle_recall_options(draw):
    f, d, k, m = (draw(st.integers(1, 4)) for _ in range(4))
    p = draw(st.integers(1, k))
    train, fresh = d * f + draw(st.integers(0, 40)), d * f + draw(st.integers(0, 40))
    symbols = max(2, math.ceil((2 * (train + fresh)) ** (1 / p)) + 1)
    return {"facts_per_episode": f, "delay": d, "cue_length": k, "recall_cue_length": p, "answer_length": m,
            "train_facts": train, "fresh_facts": fresh, "vocab_size": 4 + symbols + draw(st.integers(0, 20)),
            "haystack_length": draw(st.integers(0, 80))}


def exercise(env_id, options):
    """Build both envs, play a train and an eval episode, and check the stream's invariants."""
    env = gym.make(env_id, **options).unwrapped
    V, L = env.vocab_size, env.episode_length
    for reset_options in (None, {"phase": "eval", "task_id": env.num_tasks - 1}):
        env.reset(seed=0, options=reset_options)
        obs, target, dist = np.array(env._obs), np.array(env._target), np.array(env._distance)
        assert obs.shape == (L + 1,) and ((obs >= 0) & (obs < V)).all() and (target < V).all()
        inside = (dist >= 0) & (dist <= np.arange(L + 1))
        np.testing.assert_array_equal(obs[np.arange(L + 1)[inside] - dist[inside]], target[inside])
        for _ in range(L):
            env.step(0)
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **options)
    venv.reset(seed=0)
    for _ in range(L + 1):
        venv.step(np.zeros(2, dtype=np.int64))


@SETTINGS
@given(long_dependency_options())
def test_valid_long_dependency_options_never_crash(options):
    exercise("LongDependency-v0", options)


@SETTINGS
@given(continual_shift_options())
def test_valid_continual_shift_options_never_crash(options):
    exercise("ContinualShift-v0", options)


@SETTINGS
@given(needle_recall_options())
def test_valid_needle_recall_options_never_crash(options):
    exercise("NeedleRecall-v0", options)


INVALID = {
    "LongDependency-v0": st.one_of(
        st.tuples(st.just("vocab_size"), st.integers(max_value=41) | NOT_AN_INT),  # 16 queries need 66
        st.tuples(st.just("queries_per_episode"), st.integers(max_value=0) | NOT_AN_INT),
        st.tuples(st.just("distances"), st.sampled_from([[], [0], [4, -2], "12", [1.5]])),
        st.tuples(st.just("episode_length"), st.integers(max_value=1024 + 3 + 9 * 16 - 1)),
        st.tuples(st.just("cross_episode_queries"), st.integers(max_value=-1)),
        st.tuples(st.just("cross_episode_gap"), st.integers(max_value=0) | NOT_AN_INT),
    ),
    "ContinualShift-v0": st.one_of(
        st.tuples(st.just("num_tasks"), st.integers(max_value=0) | NOT_AN_INT),
        st.tuples(st.just("episodes_per_task"), st.integers(max_value=0)),
        st.tuples(st.just("trials_per_episode"), st.integers(max_value=0)),
        st.tuples(st.just("keys_per_task"), st.integers(max_value=0)),
        st.tuples(st.just("key_overlap"), st.floats(1.0001, 10) | st.floats(-10, -0.0001) | st.just(float("nan"))),
        st.tuples(st.just("shift"), st.text(max_size=8).filter(lambda s: s not in ("abrupt", "gradual"))),
        st.tuples(st.just("shift_window"), st.integers(max_value=0) | st.integers(21, 1000)),
        st.tuples(st.just("task_visible"), st.integers(0, 1) | st.text(max_size=2)),
        st.tuples(st.just("vocab_size"), st.integers(max_value=2 + 5 + 32 + 2 * 5 - 1)),  # 5 values, 5 fillers
        st.tuples(st.just("world_seed"), BAD_SEED),
    ),
    "NeedleRecall-v0": st.one_of(
        st.tuples(st.just("delay"), st.integers(max_value=0) | NOT_AN_INT),
        st.tuples(st.just("facts_per_episode"), st.integers(max_value=0)),
        st.tuples(st.just("haystack_length"), st.integers(max_value=-1) | NOT_AN_INT),
        st.tuples(st.just("cue_length"), st.integers(max_value=1)),  # recall_cue_length 2 > cue_length
        st.tuples(st.just("recall_cue_length"), st.integers(max_value=0) | st.integers(5, 100)),
        st.tuples(st.just("answer_length"), st.integers(max_value=0)),
        st.tuples(st.just("train_facts"), st.integers(max_value=39)),
        st.tuples(st.just("fresh_facts"), st.integers(max_value=39)),
        st.tuples(st.just("vocab_size"), st.integers(max_value=4 + 50)),  # 1280 facts need 52^2 > 2560 cues
        st.tuples(st.just("haystack_path"), st.sampled_from(["/nonexistent/haystack.txt", 3, b"x"])),
        st.tuples(st.just("world_seed"), BAD_SEED),
    ),
}


@pytest.mark.parametrize("env_id", list(INVALID))
def test_invalid_options_raise_value_error_naming_the_option(env_id):
    @SETTINGS
    @given(INVALID[env_id])
    def check(bad):
        name, value = bad
        with pytest.raises(ValueError, match=name):  # "cue_length" also matches recall_cue_length
            gym.make(env_id, **{name: value})
        with pytest.raises(ValueError, match=name):
            gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **{name: value})

    check()


def test_a_cue_shorter_than_the_recall_cue_names_both_options():
    """cue_length=1 (recall_cue_length left at its default 2) said "recall_cue_length must be an integer in [1, 1],
    got 2", about an option the user had not set."""
    with pytest.raises(ValueError, match=r"^recall_cue_length=2 is longer than cue_length=1: the recall shows a part "
                                         r"of the cue; set recall_cue_length <= 1$"):
        gym.make("NeedleRecall-v0", cue_length=1)


def test_invalid_vector_options():
    for bad in (0, -3, 1.5, "2"):
        with pytest.raises(ValueError, match="num_envs"):
            envs.LongDependencyVectorEnv(num_envs=bad)
    venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=[1, 2, 3])


def test_continual_shift_shared_keys_need_a_different_value_in_every_task():
    # 5 tasks x 2 shared keys: 2 + 5 + 2 ids, then 5 values and 5 fillers; fewer values would let two tasks
    # share one mapping (vocab_size=13 once gave 2 values, and tasks 2 and 3 the same answers)
    for vocab_size in (13, 18):
        with pytest.raises(ValueError, match=r"vocab_size=\d+ is too small .*needs at least 19"):
            gym.make("ContinualShift-v0", num_tasks=5, keys_per_task=2, vocab_size=vocab_size)
    values = gym.make("ContinualShift-v0", num_tasks=5, keys_per_task=2, vocab_size=19).unwrapped._source.values
    assert all(len(set(column)) == 5 for column in values.T.tolist())  # each shared key: 5 different values
    # without shared keys nothing conflicts: 2 values (and 2 fillers) still suffice
    gym.make("ContinualShift-v0", num_tasks=5, keys_per_task=2, key_overlap=0.0, vocab_size=2 + 5 + 10 + 4)


def test_a_shift_window_longer_than_a_task_names_episodes_per_task():
    """Was "shift_window must be an integer in [1, 2], got 5": the bound came from an option it did not name."""
    for shift in ("abrupt", "gradual"):  # unused with abrupt, still a slip
        with pytest.raises(ValueError, match=r"^shift_window must be at most episodes_per_task=2 .*got 5$"):
            gym.make("ContinualShift-v0", episodes_per_task=2, shift_window=5, shift=shift)
    assert gym.make("ContinualShift-v0", episodes_per_task=2, shift_window=2).unwrapped._source.shift_window == 2


@pytest.mark.parametrize("env_id", list(envs.ENV_IDS))
def test_reset_seeds_are_below_2_to_the_32_for_every_lane(env_id):
    """numpy takes any seed >= 0, so the envs took 2^64 while a run's seed= stops at 2^32; lane i is the scalar env
    seeded s + i, so a vector env's s leaves room for its lanes."""
    env = gym.make(env_id, disable_env_checker=True)
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")

    @SETTINGS
    @given(bad=BAD_SEED, ok=st.integers(0, 2**32 - 3))
    def check(bad, ok):
        with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\^32\) or None, got "):
            env.reset(seed=bad)
        with pytest.raises(ValueError, match=r"^seed "):
            venv.reset(seed=bad)
        with pytest.raises(ValueError, match=re.escape(f"got seed[1]={bad!r}")):
            venv.reset(seed=[0, bad, 1])
        for edge in (ok, 2**32 - 1):  # the scalar env at the top: the one seed lane 2 of ok takes
            env.reset(seed=edge)
        venv.reset(seed=ok)

    check()
    with pytest.raises(ValueError, match=r"^seed 4294967294 seeds the 3 lanes with 4294967294 \.\. 4294967296, past "
                                         r"2\^32 - 1; use a seed <= 4294967293$"):
        venv.reset(seed=2**32 - 2)
    # a numpy seed is summed as a Python int: np.uint32 wrapped around ("4294967295 .. 1") with a RuntimeWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^seed 4294967295 seeds the 3 lanes with 4294967295 \.\. 4294967297, "
                                             r"past 2\^32 - 1; use a seed <= 4294967293$"):
            venv.reset(seed=np.uint32(2**32 - 1))


def test_vector_reset_refuses_non_integer_seeds_in_a_list():
    venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=[np.int64(1), 2])  # numpy integers are seeds
    np.testing.assert_array_equal(venv.reset(seed=np.array([1, 2]))[0], obs)
    for bad, shown in (([1.9, 2.7], "seed[0]=1.9"), ([1, 2.0], "seed[1]=2.0"), ([1, True], "seed[1]=True"),
                       (np.array([1.5, 2.5]), "seed[0]=np.float64(1.5)"), ([np.True_, 2], "seed[0]=np.True_"),
                       ([1, None], "seed[1]=None")):
        usage = r"seed must be an int in \[0, 2\^32\) or a list of 2 such ints, got "
        with pytest.raises(ValueError, match=usage + re.escape(shown)):
            venv.reset(seed=bad)
    assert venv.np_random_seed == 1  # a refused seed changes nothing


@settings(max_examples=examples(60), deadline=None)
@given(rows=st.integers(1, 12), n=st.integers(1, 300), k=st.integers(1, 320), block=st.integers(8, 4096),
       seed=st.integers(0, 2**32 - 1))
def test_first_ranks_are_the_first_entries_of_the_same_random_permutations(rows, n, k, block, seed):
    """ContinualShift's world (values of shared keys, filler orders) is drawn in row blocks; the world of every
    world_seed stays the one the full (rows, n) sort gave."""
    from envs.stream import first_ranks, random_ranks

    full = random_ranks(np.random.default_rng(seed).random((rows, n)))[:, :k]
    np.testing.assert_array_equal(first_ranks(np.random.default_rng(seed), rows, n, k, block_bytes=block), full)


@settings(max_examples=examples(60), deadline=None)
@given(rows=st.integers(1, 5), n=st.integers(1, 300), k=st.integers(0, 320), ties=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_smallest_ranks_are_the_first_entries_of_the_stable_sort(rows, n, k, ties, seed):
    """LongDependency keeps Q + C of (V - 2) // 4 key ranks per lane with it (a full argsort grew with V); the
    streams stay the ones the sort gave, ties (equal uniforms) included."""
    from envs.stream import random_ranks, smallest_ranks

    u = np.random.default_rng(seed).random((rows, n))
    if ties:
        u = np.round(u * 7) / 7  # few distinct values: the stable order decides
    np.testing.assert_array_equal(smallest_ranks(u, k), random_ranks(u)[:, :k])


def test_a_large_continual_shift_world_builds_in_bounded_memory():
    """1,000 shared keys x ~199,000 values: the full uniforms and their sort took 3.2 GB at once (5,000 x 500,000
    asked for 18.5 GiB and ended in a MemoryError); in row blocks the peak stays a few hundred MB."""
    import tracemalloc

    tracemalloc.start()
    try:
        env = gym.make("ContinualShift-v0", keys_per_task=1000, num_tasks=2, vocab_size=400_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    env.reset(seed=0)
    assert env.step(0)[0] in env.observation_space


def test_options_at_the_edges_of_their_types():
    """A distance beyond int64 was an OverflowError (a traceback through agents.run's env.kwargs.distances=[...]),
    not the ValueError naming the option; numpy's 1-D arrays and bools, what a numpy user passes, were refused."""
    for bad in ([2**70], [1, 10**6 + 1]):
        with pytest.raises(ValueError, match=r"distances\[\d\] must be an integer in \[1, 1000000\]"):
            gym.make("LongDependency-v0", distances=bad)
    with pytest.raises(ValueError, match="distances must be a non-empty list"):
        gym.make("LongDependency-v0", distances=np.ones((2, 2), dtype=int))
    env = gym.make("LongDependency-v0", distances=np.array([4, 1, 2]), episode_length=64, queries_per_episode=4)
    assert env.unwrapped.max_distance == 4
    venv = gym.make_vec("ContinualShift-v0", num_envs=1, vectorization_mode="vector_entry_point",
                        task_visible=np.bool_(True), revisit=np.False_)
    assert venv._source.task_visible is True and venv._source.revisit is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(ValueError, match="task_visible must be True or False"):
            gym.make("ContinualShift-v0", task_visible=bad)
    # an int beyond float range (Hydra reads env.kwargs.key_overlap=1000...0 as one) was an OverflowError traceback
    for bad in (10**400, -(10**400)):
        with pytest.raises(ValueError, match=r"key_overlap must be a number in \[0\.0, 1\.0\], got -?10{400}$"):
            gym.make("ContinualShift-v0", key_overlap=bad)
    assert gym.make("ContinualShift-v0", key_overlap=1).unwrapped._source.shared == 32  # an int in range: all shared


def test_distances_no_episode_length_can_hold_say_so_rather_than_ask_for_one_above_its_limit():
    """distances=[1000000] asked for episode_length >= 1000147, which episode_length's own check then refused."""
    with pytest.raises(ValueError) as err:
        gym.make("LongDependency-v0", distances=[1_000_000])
    assert str(err.value) == ("distances up to 1000000 with 16 + 0 queries need episodes of 1000147 steps, above "
                              "episode_length's limit 1000000; use smaller distances")


@pytest.mark.parametrize("env_id", list(envs.ENV_IDS))
def test_a_refused_reset_leaves_the_env_as_a_fresh_one(env_id):
    """A bad reset option raises before anything moves: the next reset and steps are those of a fresh env. (Not
    through gym.make's env checker, whose first-reset bookkeeping breaks after a refused first reset: README.)"""
    refused, fresh = (gym.make(env_id, disable_env_checker=True) for _ in range(2))
    with pytest.raises(ValueError, match="reset option 'phase' must be one of"):
        refused.reset(options={"phase": "test"})
    assert refused.reset(seed=3)[0] == fresh.reset(seed=3)[0]
    for action in range(20):
        assert refused.step(action)[:4] == fresh.step(action)[:4]
