"""Registry-wide checks over every memstream id: Gymnasium API, determinism, pickling, vector == scalar lanes,
the distance invariant and the info contract."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

IDS = list(envs.ENV_IDS)
INFO_KEYS = {"target", "scored", "task_id", "distance", "phase", "memory_writes", "delay"}


def play(env, episodes, seed, actions=None, options=None):
    """Steps of a scalar env over `episodes` episodes: list of (obs, reward, terminated, info) per step."""
    rows = []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed if ep == 0 else None, options=options)
        rows.append((obs, 0.0, False, info))
        terminated = False
        while not terminated:  # the action at row r is actions[r]: rows count resets like a vector autoreset
            action = 0 if actions is None else int(actions[(len(rows) - 1) % len(actions)])
            obs, reward, terminated, truncated, info = env.step(action)
            assert truncated is False
            rows.append((obs, reward, terminated, info))
    return rows


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes_without_warnings(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id)
        check_env(env.unwrapped)
        venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
        venv.reset(seed=0)
        venv.step(np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("env_id", IDS)
def test_contract_attributes_match_vector_env(env_id):
    env = gym.make(env_id).unwrapped
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    for name in ("vocab_size", "num_tasks", "episode_length", "eval_episodes", "special_tokens", "max_distance"):
        assert getattr(env, name) == getattr(venv, name), name
    assert env.observation_space == gym.spaces.Discrete(env.vocab_size) == env.action_space
    specials = env.special_tokens
    assert specials["BOS"] == 0 and specials["EOS"] == 1
    assert max(specials.values()) == len(specials) - 1  # reserved ids are the lowest ones
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_stream_over_several_episodes(env_id):
    a, b = gym.make(env_id), gym.make(env_id)
    actions = np.random.default_rng(0).integers(0, a.unwrapped.vocab_size, 97)
    rows_a, rows_b = play(a, 3, seed=5, actions=actions), play(b, 3, seed=5, actions=actions)
    assert rows_a == rows_b
    assert play(a, 3, seed=5, actions=actions) == rows_a  # a seeded reset restarts the stream
    other_seed = [r[0] for r in play(b, 1, seed=6)]
    assert other_seed != [r[0] for r in rows_a[:len(other_seed)]]


@pytest.mark.parametrize("env_id", IDS)
def test_info_on_every_step_has_the_contract_types(env_id):
    env = gym.make(env_id)
    episodes = min(env.unwrapped.eval_episodes, 2) + 1
    length = env.unwrapped.episode_length
    rows = play(env, episodes, seed=1)
    assert len(rows) == episodes * (length + 1)
    for obs, reward, _, info in rows:
        assert set(info) == INFO_KEYS
        assert type(obs) is int and 0 <= obs < env.unwrapped.vocab_size
        assert type(info["target"]) is int and type(info["scored"]) is bool and type(info["distance"]) is int
        assert info["scored"] == (info["target"] >= 0)
        assert info["phase"] in ("train", "write", "recall") and type(info["memory_writes"]) is bool
        assert type(reward) is float and reward in (0.0, 1.0)
    ends = [i for i, r in enumerate(rows) if r[2]]
    assert ends == [(e + 1) * (length + 1) - 1 for e in range(episodes)]
    assert all(rows[i][0] == env.unwrapped.special_tokens["EOS"] for i in ends)


@pytest.mark.parametrize("env_id", IDS)
def test_answer_was_shown_distance_steps_earlier_across_episodes(env_id):
    env = gym.make(env_id).unwrapped
    L = env.episode_length
    episodes = env.eval_episodes + 2
    rows = play(env, episodes, seed=2)
    # the stream: observations 0..L-1 of each episode (the terminal EOS is not acted upon)
    stream = [r for i, r in enumerate(rows) if i % (L + 1) != L]
    obs = np.array([r[0] for r in stream])
    target = np.array([r[3]["target"] for r in stream])
    distance = np.array([r[3]["distance"] for r in stream])
    at = np.nonzero(distance >= 0)[0]
    assert len(at) > 0 and (distance[target < 0] == -1).all()
    assert (at - distance[at] >= 0).all()
    np.testing.assert_array_equal(obs[at - distance[at]], target[at])
    assert distance.max() <= env.max_distance


@pytest.mark.parametrize("env_id", IDS)
def test_vector_lanes_equal_scalar_streams_through_autoreset(env_id):
    lanes, seed = 3, 11
    venv = gym.make_vec(env_id, num_envs=lanes, vectorization_mode="vector_entry_point")
    L = venv.episode_length
    rng = np.random.default_rng(1)
    actions = rng.integers(0, venv.vocab_size, size=(2 * (L + 1), lanes))
    obs, info = venv.reset(seed=seed)
    vec_rows = [(obs, np.zeros(lanes), np.zeros(lanes, bool), info)]
    for t in range(2 * (L + 1) - 1):  # two episodes: the step after termination autoresets every lane
        obs, reward, terminated, truncated, info = venv.step(actions[t])
        assert not truncated.any()
        vec_rows.append((obs, reward, terminated, info))
    for lane in range(lanes):
        env = gym.make(env_id).unwrapped
        scalar = play(env, 2, seed=seed + lane, actions=actions[:, lane])
        for t, (s_row, v_row) in enumerate(zip(scalar, vec_rows, strict=True)):
            assert s_row[0] == v_row[0][lane], t
            if t != L + 1:  # the autoreset step pays nothing in the vector env
                assert s_row[1] == v_row[1][lane] and s_row[2] == v_row[2][lane], t
            for key in INFO_KEYS:
                assert s_row[3][key] == v_row[3][key][lane], (t, key)


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_round_trip_mid_episode_continues_identically(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=4)
    for _ in range(7):
        env.step(0)
    copy = pickle.loads(pickle.dumps(env))
    # side by side from step 7 on (a copy that lost its place in the episode differs at once), through the end of
    # the episode and the next one's reset (the RNG state)
    for _ in range(env.episode_length + 3):
        a, b = env.step(1), copy.step(1)
        assert a[:4] == b[:4] and all(np.array_equal(a[4][k], b[4][k]) for k in INFO_KEYS)
        if a[2]:
            (obs_a, info_a), (obs_b, info_b) = env.reset(), copy.reset()
            assert obs_a == obs_b and all(np.array_equal(info_a[k], info_b[k]) for k in INFO_KEYS)
    assert play(copy, 2, seed=None)[1:] == play(env, 2, seed=None)[1:]
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=4)
    venv.step(np.zeros(2, dtype=np.int64))
    vcopy = pickle.loads(pickle.dumps(venv))
    for _ in range(venv.episode_length + 3):
        a, b = venv.step(np.ones(2, dtype=np.int64)), vcopy.step(np.ones(2, dtype=np.int64))
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        assert all((a[4][k] == b[4][k]).all() for k in INFO_KEYS)


@pytest.mark.parametrize("env_id", IDS)
def test_returned_arrays_are_fresh_objects(env_id):
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    obs0, info0 = venv.reset(seed=0)
    obs1, _, _, _, info1 = venv.step(np.zeros(2, dtype=np.int64))
    assert not np.shares_memory(obs0, obs1)
    assert not any(np.shares_memory(info0[k], info1[k]) for k in INFO_KEYS)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_actions_raise_clear_errors(env_id):
    env = gym.make(env_id)
    V = env.unwrapped.vocab_size
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be in \[0, "):
        env.step(V)
    with pytest.raises(ValueError, match=r"action must be in \[0, "):
        env.step(-1)
    for bad in (1.5, 2.0, np.float64(1.0), "1", None, [1]):  # the vector env's ValueError for its float actions
        with pytest.raises(ValueError, match=r"action must be an integer in \[0, "):
            env.step(bad)
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    for bad in (np.array([0, V, 1]), np.array([0, -1, 1]), np.zeros(2, dtype=np.int64), np.zeros(3)):
        with pytest.raises(ValueError, match="actions must"):
            venv.step(bad)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_reset_options_and_unknown_constructor_options(env_id):
    env = gym.make(env_id)
    num_tasks = env.unwrapped.num_tasks
    for options, match in (({"phase": "test"}, "phase"), ({"phase": "eval", "task_id": num_tasks}, "task_id"),
                           ({"phase": "eval", "task_id": -1}, "task_id"), ({"task_id": 0}, "task_id"),
                           ({"colour": 1}, "colour"), ("eval", "dict")):
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)
    with pytest.raises(ValueError, match="no_such_option"):
        gym.make(env_id, no_such_option=3)
    with pytest.raises(ValueError, match="no_such_option"):
        gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", no_such_option=3)
    with pytest.raises(ValueError, match="render_mode"):
        type(env.unwrapped)(render_mode="human")


@pytest.mark.parametrize("env_id", IDS)
def test_ansi_render_names_structure_tokens(env_id):
    env = gym.make(env_id, render_mode="ansi")
    env.reset(seed=0)
    for _ in range(5):
        env.step(0)
    text = env.render()
    assert isinstance(text, str) and "BOS" in text and "step 5/" in text
    assert text.startswith(f"[{env_id} ")  # a preset's own id (its base's was shown)
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", render_mode="ansi")
    venv.reset(seed=0)
    assert venv.render().count("BOS") == 2
    assert all(line.startswith(f"[{env_id} ") for line in venv.render().splitlines())


def test_vector_reset_seeds_np_random_as_gymnasium_does():
    venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=3)
    assert venv.np_random_seed == 3  # VectorEnv.reset: np_random, np_random_seed = seeding.np_random(seed)
    assert venv.np_random.random() == gym.utils.seeding.np_random(3)[0].random()
    venv.reset()
    assert venv.np_random_seed == 3  # an unseeded reset keeps it
    same, _ = venv.reset(seed=[3, 4])  # a list: lane 0's seed, the lanes' seeds of reset(seed=3)
    assert venv.np_random_seed == 3
    np.testing.assert_array_equal(same, obs)  # the episodes come from the lanes' generators, not np_random
    venv.reset(seed=[8, 5])
    assert venv.np_random_seed == 8


@pytest.mark.parametrize("env_id", IDS)
def test_scalar_step_refuses_bool_actions(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    for bad in (True, False, np.True_):  # operator.index(True) == 1; the vector env refuses bools by dtype
        with pytest.raises(ValueError, match=r"action must be an integer in \[0, \d+\] .*not a bool"):
            env.step(bad)
    assert env._t == 0  # nothing was stepped


def episode_obs(env, seed=None, options=None) -> list:
    """The observations of one whole scalar episode."""
    obs = [env.reset(seed=seed, options=options)[0]]
    terminated = False
    while not terminated:
        o, _, terminated, _, _ = env.step(0)
        obs.append(o)
    return obs


@pytest.mark.parametrize("env_id", IDS)
def test_eval_resets_leave_the_training_stream_as_it_was(env_id):
    """Eval episodes draw from their own per-lane generator: the training episodes are the same however often
    the agent is evaluated (they drew from the training generator, so every later training episode changed)."""
    plain, evaluated = gym.make(env_id), gym.make(env_id)
    episode_obs(plain, seed=0)
    episode_obs(evaluated, seed=0)
    evals = [episode_obs(evaluated, options={"phase": "eval", "task_id": 0}) for _ in range(2)]
    assert evals[0] != evals[1]  # consecutive eval episodes are new ones
    assert episode_obs(plain) == episode_obs(evaluated)
    # the eval stream is seeded too: the same eval episodes after a re-seed, whatever training came before
    again = gym.make(env_id)
    episode_obs(again, seed=0)
    episode_obs(again)
    assert episode_obs(again, options={"phase": "eval", "task_id": 0}) == evals[0]
    # the vector env's lanes are scalar envs seeded s + i, eval episodes included
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    first, _ = venv.reset(options={"phase": "eval", "task_id": 0})
    assert first[0] == evals[0][0]
    lane1 = gym.make(env_id)
    episode_obs(lane1, seed=1)
    assert first[1] == episode_obs(lane1, options={"phase": "eval", "task_id": 0})[0]


@pytest.mark.parametrize("env_id", IDS)
def test_seeds_are_ints_at_least_zero_in_both_envs(env_id):
    env = gym.make(env_id).unwrapped
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    for bad in (True, -1, 1.0, "3", [1]):
        with pytest.raises(ValueError, match="seed"):
            env.reset(seed=bad)
        with pytest.raises(ValueError, match="seed"):
            venv.reset(seed=bad if not isinstance(bad, list) else [bad[0], -2])
    assert env.reset(seed=np.int64(3))[1] == gym.make(env_id).unwrapped.reset(seed=3)[1]
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(env_id, num_envs=10**12, vectorization_mode="vector_entry_point")
