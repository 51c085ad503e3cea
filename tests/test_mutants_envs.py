"""Mutation-testing kills for the envs: vector eval streams, fresh evaluations, distances, recall order."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)

BASE_IDS = ["LongDependency-v0", "ContinualShift-v0", "NeedleRecall-v0"]


def vector_episode(venv, seed=None, options=None) -> np.ndarray:
    """(L + 1, B) observations of one whole episode of every lane."""
    obs, _ = venv.reset(seed=seed, options=options)
    rows = [obs]
    actions = np.zeros(venv.num_envs, dtype=np.int64)
    for _ in range(venv.unwrapped.episode_length):
        obs, *_ = venv.step(actions)
        rows.append(obs)
    return np.stack(rows)


@pytest.mark.parametrize("env_id", BASE_IDS)
def test_vector_eval_resets_leave_every_lanes_training_stream_as_it_was(env_id):
    """The vector env's eval episodes come from the lanes' eval generators: the next training episode is the same
    whether or not the trainer evaluated in between (the scalar env's test does not reach the vector env)."""
    make = lambda: gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")  # noqa: E731
    plain, evaluated = make(), make()
    first = vector_episode(plain, seed=0)
    assert np.array_equal(vector_episode(evaluated, seed=0), first)
    evals = [vector_episode(evaluated, options={"phase": "eval", "task_id": 0}) for _ in range(2)]
    assert not np.array_equal(evals[0], evals[1])
    assert np.array_equal(vector_episode(plain), vector_episode(evaluated))


def scored_per_episode(env, episodes: int, options: dict) -> list[int]:
    counts = []
    for _ in range(episodes):
        _, info = env.reset(options=options)
        n, terminated = int(info["scored"]), False
        while not terminated:
            _, _, terminated, _, info = env.step(0)
            n += int(info["scored"])
        counts.append(n)
    return counts


def test_long_dependency_each_complete_evaluation_starts_without_carried_pairs():
    """cross_episode_queries=C, gap=1: an evaluation is 2 episodes; its first has only the Q in-episode queries
    (nothing carried from the previous evaluation), its second the Q + C. Training carries across episodes."""
    env = gym.make("LongDependency-v0", queries_per_episode=4, cross_episode_queries=3, cross_episode_gap=1)
    env.reset(seed=0)
    assert env.unwrapped.eval_episodes == 2
    ev = {"phase": "eval", "task_id": 0}
    assert scored_per_episode(env, 6, ev) == [4, 7, 4, 7, 4, 7]
    assert scored_per_episode(env, 3, {"phase": "train"}) == [7, 7, 7]  # the seeded reset was training episode 0


def _steps(env, **reset):
    """(obs, target, task_id) of every acted-upon step of one scalar episode."""
    obs, info = env.reset(**reset)
    out, terminated = [], False
    while not terminated:
        out.append((obs, info["target"], info["task_id"]))
        obs, _, terminated, _, info = env.step(0)
    return out


def test_continual_shift_blended_trials_report_the_task_whose_mapping_they_use():
    """shift="gradual": trials of the next task are blended in before a switch; info["task_id"] is the task of each
    trial (the one whose key -> value mapping the target follows), not the episode's main task."""
    env = gym.make("ContinualShift-v0", num_tasks=2, episodes_per_task=2, trials_per_episode=40, keys_per_task=8,
                   shift="gradual", shift_window=2)
    env.reset(seed=0)
    mapping = {}
    for j in range(2):  # pure eval episodes give each task's mapping (keys are shared, values conflict)
        for obs, target, task in _steps(env, options={"phase": "eval", "task_id": j}):
            if target >= 0:
                assert task == j
                assert mapping.setdefault((j, obs), target) == target
    assert any(mapping[0, k] != mapping[1, k] for (_, k) in mapping)
    # training episode 0 is blended (share 1/3 of task 1), then episode 1 (2/3)
    steps = [s for s in _steps(env, seed=0) if s[1] >= 0] + [s for s in _steps(env) if s[1] >= 0]
    assert {task for _, _, task in steps} == {0, 1}
    for obs, target, task in steps:
        assert mapping[task, obs] == target


def shown_where(rec, lane_steps: int):
    """(scored step g, g - distance) per lane for the scored steps whose distance reaches back into the recording."""
    for b in range(rec["obs"].shape[0]):
        g = np.nonzero(rec["scored"][b] & (rec["distance"][b] >= 0))[0]
        g = g[g - rec["distance"][b, g] >= 0]
        assert g.size and g.max() < lane_steps
        yield b, g, g - rec["distance"][b, g]


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("LongDependency-v0", {"cross_episode_queries": 4, "cross_episode_gap": 2}),
    ("NeedleRecall-v0", {"delay": 3, "facts_per_episode": 3, "haystack_length": 64}),
])
def test_a_scored_steps_distance_points_at_where_its_answer_was_shown(env_id, kwargs):
    """`info["distance"]` (accuracy-by-distance's key) counts the steps back, across episodes, to where the lane's
    stream showed the answer: that step's observation is the target (LongDependency's in-episode distance was the
    only one the oracle tests pinned; its cross-episode and NeedleRecall's could be off by a step)."""
    from tests.test_envs_behaviour import rollout

    rec, venv = rollout(env_id, 3, 12, **kwargs)
    cross = 0
    for b, g, shown in shown_where(rec, rec["obs"].shape[1]):
        assert (rec["obs"][b, shown] == rec["target"][b, g]).all()
        cross += int((g // venv.episode_length != shown // venv.episode_length).sum())
    assert cross >= 3 * 4  # distances across episodes were checked, not only within one


def test_needle_recall_asks_an_episodes_facts_in_another_order_than_it_showed_them():
    """A recall episode asks for the facts of its write episode in a fresh random order, not the order shown."""
    from tests.test_envs_behaviour import rollout

    rec, venv = rollout("NeedleRecall-v0", 4, 12, delay=3, facts_per_episode=3, haystack_length=64)
    L, reordered = venv.episode_length, 0
    for _, g, shown in shown_where(rec, rec["obs"].shape[1]):
        for e in np.unique(g // L):  # a recall episode: the write positions of its facts, in the order asked
            first = shown[g // L == e][::2]  # answer_length 2: every block's first scored step
            assert len(first) == 3
            reordered += int(not (np.diff(first) > 0).all())
    assert reordered >= 4  # of 24 recall episodes, ~5/6 are asked out of order


def test_continual_shift_gradual_episodes_draw_the_next_tasks_share_of_their_trials():
    """shift="gradual", window 5, 6 episodes a task: training episode e (1..5) draws each trial from the next task
    with probability e / 6 (`train_plan`'s share). The blend tests pinned the plan and which mapping a trial uses,
    not that the share is the next task's: drawn the other way round, episode 1 was 5/6 the next task."""
    venv = gym.make_vec("ContinualShift-v0", num_envs=4, vectorization_mode="vector_entry_point", num_tasks=2,
                        episodes_per_task=6, trials_per_episode=300, keys_per_task=8, shift="gradual")
    fractions = []
    for e in range(6):
        obs, info = venv.reset(seed=0 if e == 0 else None)
        of_next, scored, terminated = 0, 0, False
        while not terminated:
            of_next += int((info["task_id"][info["scored"]] == 1).sum())
            scored += int(info["scored"].sum())
            obs, _, term, _, info = venv.step(np.zeros(4, dtype=np.int64))
            terminated = bool(term.all())
        fractions.append(of_next / scored)
    assert fractions[0] == 0.0  # before the window: task 0 alone
    np.testing.assert_allclose(fractions[1:], np.arange(1, 6) / 6, atol=0.05)  # 1200 trials an episode


def test_long_dependency_noise_uses_every_noise_token_and_render_shows_the_last_32_steps():
    """Noise is uniform over [noise0, V): the last id too. `render` names the last RENDER_TOKENS observations."""
    env = gym.make("LongDependency-v0", vocab_size=72, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    src, seen = env.unwrapped._source, [obs]
    for _ in range(40):
        seen.append(env.step(0)[0])
    noise = {t for t in env.unwrapped._obs if t >= src.noise0}
    assert noise == set(range(src.noise0, 72))
    names = env.render().split("] ", 1)[1].split(" ")
    assert names == [src.token_name(t) for t in seen[-32:]]


def test_needle_recall_reveals_each_answer_token_after_it_was_asked_for():
    """A recall block is RECALL c_1 .. c_P a_1 .. a_(M-1): the step of c_P is scored with target a_1, then a_1 is
    shown and scored with target a_2, and so on. So within a block each scored step's observation after the first
    is the previous step's target (the revealed answer), never a cue token past c_P."""
    from tests.test_envs_behaviour import rollout

    rec, venv = rollout("NeedleRecall-v0", 3, 8, delay=2, facts_per_episode=3, haystack_length=40, cue_length=4,
                        recall_cue_length=2, answer_length=3)
    obs, target, scored = rec["obs"], rec["target"], rec["scored"]
    pairs = scored[:, :-1] & scored[:, 1:]  # (B, S-1): step t and t+1 both scored (one block's answers)
    assert pairs.sum() == 3 * 4 * 3 * 2  # lanes x recall episodes x facts x (answer_length - 1)
    np.testing.assert_array_equal(obs[:, 1:][pairs], target[:, :-1][pairs])
    first = scored & ~np.concatenate([np.zeros((3, 1), bool), scored[:, :-1]], axis=1)  # each block's c_P step
    lanes, steps = np.nonzero(first)
    assert (obs[lanes, steps - 2] == 3).all()  # RECALL c_1 c_2: the cue shown is the partial one, P = 2


@pytest.mark.parametrize("keys, overlap, shared", [(8, 0.5, 4), (3, 0.5, 2), (10, 0.58, 6), (6, 0.0, 0), (6, 1.0, 6)])
def test_continual_shift_tasks_ask_for_round_key_overlap_keys_in_common(keys, overlap, shared):
    """key_overlap: S = round(key_overlap x keys_per_task) keys (halves to even: 0.5 x 3 gives 2) are asked in every
    task, each task's other keys in that task alone; the shared keys are where the mappings conflict."""
    from tests.test_envs_behaviour import rollout

    rec, _ = rollout("ContinualShift-v0", 2, 3, num_tasks=3, episodes_per_task=1, trials_per_episode=4 * keys,
                     keys_per_task=keys, key_overlap=overlap)
    asked = [set(rec["obs"][rec["scored"] & (rec["task_id"] == j)].tolist()) for j in range(3)]
    assert [len(a) for a in asked] == [keys] * 3
    common = asked[0] & asked[1] & asked[2]
    assert len(common) == shared
    assert all(len(asked[i] & asked[j]) == shared for i, j in ((0, 1), (0, 2), (1, 2)))


def test_long_dependency_draws_every_distance_uniformly_the_largest_too():
    """A query's distance is drawn uniformly from `distances`: over 4 x 12 episodes of 8 queries each of 1, 3, 7
    and 20 comes up about a quarter of the time (the largest one, the hardest, was never drawn by an off-by-one)."""
    from tests.test_envs_behaviour import chance_bound, rollout

    rec, _ = rollout("LongDependency-v0", 4, 12, distances=(1, 3, 7, 20), queries_per_episode=8, episode_length=128)
    drawn = rec["distance"][rec["scored"]]
    assert len(drawn) == 4 * 12 * 8 and set(drawn.tolist()) == {1, 3, 7, 20}
    shares = np.array([(drawn == d).mean() for d in (1, 3, 7, 20)])
    assert np.abs(shares - 0.25).max() < chance_bound(0.25, len(drawn))
