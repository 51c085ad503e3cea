"""Per-env behaviour: oracle, random and windowed policies, ContinualShift's schedule, NeedleRecall's cycle.

Policies see observations only (never `info`): the stream is open loop, so a rollout is first recorded, the
policy computes its actions causally from the recorded observations, and a replay with the same seed pays them.
"""

from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401

WINDOW = 64


def rollout(env_id, lanes, episodes, seed=0, actions=None, options=None, **kwargs):
    """(B, episodes * L) arrays over the acted-upon steps (obs, info fields, reward), explicit resets."""
    venv = gym.make_vec(env_id, num_envs=lanes, vectorization_mode="vector_entry_point", **kwargs)
    L = venv.episode_length
    cols = defaultdict(list)
    for e in range(episodes):
        obs, info = venv.reset(seed=seed if e == 0 else None, options=options)
        for t in range(L):
            act = np.zeros(lanes, dtype=np.int64) if actions is None else actions[:, e * L + t]
            cols["obs"].append(obs)
            for key, value in info.items():
                cols[key].append(value)
            obs, reward, terminated, _, info = venv.step(act)
            cols["reward"].append(reward)
        assert terminated.all()
    return {k: np.stack(v, axis=1) for k, v in cols.items()}, venv


def replay_score(env_id, lanes, episodes, actions, recorded, **kwargs):
    """Replay with `actions`; the stream must be unchanged; returns rewards (B, S)."""
    again, _ = rollout(env_id, lanes, episodes, actions=actions, **kwargs)
    np.testing.assert_array_equal(again["obs"], recorded["obs"])  # open loop
    return again["reward"]


def chance_bound(p, n):
    """Four binomial standard deviations around chance p with n samples."""
    return 4 * np.sqrt(p * (1 - p) / n) + 1e-9


# ----------------------------------------------------------------------------------------------- LongDependency
def ld_ranges(vocab=256):
    n = (vocab - 2) // 4
    return n, 2, 2 + n, 2 + 2 * n  # n, first key, first query, first value


def ld_policy(obs, window=None, copy_recent=False, seed=0):
    """Answer a query q_i with the value after the last k_i seen (within `window` observations if given);
    with copy_recent, answer the most recent value token in the window instead; else a random value."""
    n, key0, query0, value0 = ld_ranges()
    rng = np.random.default_rng(seed)
    actions = np.zeros_like(obs)
    for b, t in zip(*np.nonzero((obs >= query0) & (obs < value0)), strict=True):
        lo = 0 if window is None else max(0, t - window + 1)
        past = obs[b, lo:t]
        guess = value0 + rng.integers(n)
        if copy_recent:
            values = np.nonzero((past >= value0) & (past < value0 + n))[0]
            guess = past[values[-1]] if len(values) else guess
        else:
            hits = np.nonzero(past[:-1] == obs[b, t] - n)[0]
            guess = past[hits[-1] + 1] if len(hits) else guess
        actions[b, t] = guess
    return actions


def test_long_dependency_oracle_scores_every_query_including_cross_episode():
    kw = {"cross_episode_queries": 4, "cross_episode_gap": 2}
    rec, venv = rollout("LongDependency-v0", 4, 4, **kw)
    assert (rec["distance"] > venv.episode_length).any()  # some answers were shown episodes earlier
    reward = replay_score("LongDependency-v0", 4, 4, ld_policy(rec["obs"]), rec, **kw)
    assert (reward[rec["scored"]] == 1.0).all() and (reward[~rec["scored"]] == 0.0).all()


def test_long_dependency_random_policy_scores_chance():
    rec, _ = rollout("LongDependency-v0", 32, 1)
    n, _, _, value0 = ld_ranges()
    actions = value0 + np.random.default_rng(1).integers(0, n, rec["obs"].shape)
    reward = replay_score("LongDependency-v0", 32, 1, actions, rec)[rec["scored"]]
    assert abs(reward.mean() - 1 / n) < chance_bound(1 / n, reward.size)


def test_long_dependency_window_policies_are_at_chance_beyond_the_window():
    rec, _ = rollout("LongDependency-v0", 48, 1)
    n, _, _, _ = ld_ranges()
    scored, dist, target = rec["scored"], rec["distance"], rec["target"]
    lookup = ld_policy(rec["obs"], window=WINDOW) == target
    copier = ld_policy(rec["obs"], window=WINDOW, copy_recent=True) == target
    near, far = scored & (dist <= WINDOW - 2), scored & (dist > WINDOW)
    assert lookup[near].all()  # the windowed policy is a real policy: inside its window it is perfect
    assert far.sum() > 200
    for correct in (lookup[far], copier[far]):
        assert correct.mean() < 1 / n + chance_bound(1 / n, correct.size)
    # the answer rarely appears among the last 128 observations of a query at distance > 128
    b, t = np.nonzero(scored & (dist > 128))
    recent = np.array([target[i, j] in rec["obs"][i, j - 128:j] for i, j in zip(b, t, strict=True)])
    assert recent.mean() < 0.1


# ----------------------------------------------------------------------------------------------- ContinualShift
def cs_policy(obs, length=301, num_tasks=5, by_context=False):
    """Perfect memory of the last value revealed for each key (per context token when by_context)."""
    memory, actions = {}, np.zeros_like(obs)
    key_lo = 2 + num_tasks
    for b in range(obs.shape[0]):
        for t in range(1, obs.shape[1] - 1):
            if (t % length - 2) % 3 == 0 and obs[b, t] >= key_lo:  # a key step: BOS, then (context, key, value)
                slot = (b, obs[b, t - 1] if by_context else None, obs[b, t])
                actions[b, t] = memory.get(slot, 0)
                memory[slot] = obs[b, t + 1]  # revealed next
    return actions


@pytest.mark.parametrize("kw", [{"episodes_per_task": 3},
                                {"shift": "gradual", "task_visible": True, "episodes_per_task": 3}])
def test_continual_shift_oracle_scores_every_answer_shown_before(kw):
    rec, _ = rollout("ContinualShift-v0", 3, 8, **kw)
    actions = cs_policy(rec["obs"], by_context="task_visible" in kw)
    reward = replay_score("ContinualShift-v0", 3, 8, actions, rec, **kw)
    shown = rec["scored"] & (rec["distance"] >= 0)
    assert shown.sum() > 1000 and (reward[shown] == 1.0).all()
    assert len(np.unique(rec["task_id"])) > 1


def test_continual_shift_random_policy_scores_chance():
    rec, venv = rollout("ContinualShift-v0", 16, 1)
    num_values = (256 - 2 - 5 - 32) // 2
    actions = 2 + 5 + 32 + np.random.default_rng(2).integers(0, num_values, rec["obs"].shape)
    reward = replay_score("ContinualShift-v0", 16, 1, actions, rec)[rec["scored"]]
    assert abs(reward.mean() - 1 / num_values) < chance_bound(1 / num_values, reward.size)


def test_continual_shift_schedule_and_eval_episodes_do_not_move_it():
    venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        num_tasks=3, episodes_per_task=2)
    assert venv.schedule == (0, 0, 1, 1, 2, 2) and venv.episodes_per_task == 2
    tasks = []
    for e in range(8):
        if e == 3:
            for j in (2, 0):
                _, info = venv.reset(options={"phase": "eval", "task_id": j})
                assert (info["task_id"] == j).all() and (info["phase"] == "eval").all()
                assert venv.episode_index == 3 and venv.current_task == 1
        _, info = venv.reset(seed=0 if e == 0 else None)
        tasks.append(int(info["task_id"][0]))
        assert venv.episode_index == e + 1 and venv.current_task == tasks[-1]
    assert tasks == [0, 0, 1, 1, 2, 2, 2, 2]  # after the schedule the last task continues


def test_continual_shift_keys_conflict_across_tasks_and_never_repeat_within_the_window():
    env = gym.make("ContinualShift-v0").unwrapped
    answers = {}
    for j in range(2):
        env.reset(seed=0, options={"phase": "eval", "task_id": j})
        obs = np.array(env._obs)
        keys, values = obs[2:-1:3], obs[3::3]
        answers[j] = dict(zip(keys.tolist(), values.tolist(), strict=True))
        gaps = [np.diff(np.nonzero(keys == k)[0]).min() for k in np.unique(keys)]
        assert 3 * min(gaps) > 64  # a key comes back only after 96 steps: out of a 64-step window
    assert answers[0].keys() == answers[1].keys()  # key_overlap=1: the same keys ...
    assert all(answers[0][k] != answers[1][k] for k in answers[0])  # ... with conflicting values


def test_continual_shift_hidden_task_is_inferable_from_filler_statistics():
    def filler_histogram(task, seed):
        rec, _ = rollout("ContinualShift-v0", 1, 1, seed=seed, options={"phase": "eval", "task_id": task})
        return np.bincount(rec["obs"][0, 1::3], minlength=256) / rec["obs"][0, 1::3].size

    centroids = np.stack([filler_histogram(j, 0) for j in range(5)])
    for j in range(5):
        guess = np.argmin(((centroids - filler_histogram(j, 100 + j)) ** 2).sum(axis=1))
        assert guess == j


# ------------------------------------------------------------------------------------------------- NeedleRecall
NR_SMALL = {"delay": 3, "facts_per_episode": 3, "haystack_length": 64}


def nr_policy(obs, cue=2, answer=2, memory=None):
    """Perfect memory of every FACT block; answers recall cues from it (random content token if unknown)."""
    K, rng = 4, np.random.default_rng(0)
    memory = {} if memory is None else memory
    actions = np.zeros_like(obs)
    for b in range(obs.shape[0]):
        row = obs[b]
        for p in np.nonzero(row == 2)[0]:  # FACT
            memory[tuple(row[p + 1:p + 1 + cue])] = row[p + 1 + K:p + 1 + K + answer]
        for r in np.nonzero(row == 3)[0]:  # RECALL
            ans = memory.get(tuple(row[r + 1:r + 1 + cue]))
            for i in range(min(answer, len(row) - r - cue)):
                actions[b, r + cue + i] = ans[i] if ans is not None else 4 + rng.integers(124)
    return actions


@pytest.mark.parametrize("options", [None, {"phase": "eval", "task_id": 0}])
def test_needle_recall_oracle_recalls_every_fact(options):
    rec, venv = rollout("NeedleRecall-v0", 3, 20, options=options)
    assert venv.eval_episodes == 20
    reward = replay_score("NeedleRecall-v0", 3, 20, nr_policy(rec["obs"]), rec, options=options)
    assert rec["scored"].sum() == 3 * 10 * 4 * 2
    assert (reward[rec["scored"]] == 1.0).all() and (reward[~rec["scored"]] == 0.0).all()


def test_needle_recall_random_and_window_policies_score_chance():
    rec, venv = rollout("NeedleRecall-v0", 16, 20)
    scored = rec["scored"]
    assert (rec["distance"][scored] >= 10 * venv.episode_length - venv.episode_length).all()
    actions = 4 + np.random.default_rng(3).integers(0, 124, rec["obs"].shape)
    random_reward = replay_score("NeedleRecall-v0", 16, 20, actions, rec)[scored]
    windowed = np.stack([nr_policy(rec["obs"][:, max(0, t - WINDOW + 1):t + 1])[:, -1]
                         for t in range(rec["obs"].shape[1])], axis=1)
    for correct in (random_reward == 1.0, (windowed == rec["target"])[scored]):
        assert abs(correct.mean() - 1 / 124) < chance_bound(1 / 124, correct.size)


def test_needle_recall_cycle_writes_and_fresh_facts():
    rec, venv = rollout("NeedleRecall-v0", 4, 12, **NR_SMALL)
    L, D = venv.episode_length, 3
    phases = rec["phase"][0, ::L].tolist()
    assert phases == (["write"] * D + ["recall"] * D) * 2 and venv.eval_episodes == 2 * D
    recall = rec["phase"] == "recall"
    assert not rec["memory_writes"][recall].any() and rec["memory_writes"][~recall].all()
    assert (rec["delay"][recall] == D).all() and (rec["delay"][~recall] == -1).all()
    assert rec["scored"][~recall].sum() == 0

    def shown_facts(obs):
        return {tuple(row[p + 1:p + 7]) for row in obs for p in np.nonzero(row == 2)[0]}

    pools = {name: {tuple(f) for f in pool} for name, pool in venv.fact_pools.items()}
    assert not pools["train"] & pools["fresh"]
    train_shown = shown_facts(rec["obs"])
    assert len(train_shown) >= 4 * 2 * D * 3 - 4 and train_shown <= pools["train"]
    ev, _ = rollout("NeedleRecall-v0", 4, 6, options={"phase": "eval", "task_id": 0}, **NR_SMALL)
    assert shown_facts(ev["obs"]) <= pools["fresh"]


def test_needle_recall_eval_episodes_do_not_disturb_the_training_cycle():
    venv = gym.make_vec("NeedleRecall-v0", num_envs=2, vectorization_mode="vector_entry_point", **NR_SMALL)
    phases = []
    for e in range(8):
        if e in (2, 5):
            _, info = venv.reset(options={"phase": "eval", "task_id": 0})
            assert info["phase"][0] == "write"  # the eval stream has its own cycle
        _, info = venv.reset(seed=0 if e == 0 else None)
        phases.append(str(info["phase"][0]))
    assert phases == ["write"] * 3 + ["recall"] * 3 + ["write"] * 2


def test_needle_recall_text_haystack_and_missing_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    env = gym.make("NeedleRecall-v0", haystack_path=str(path), render_mode="ansi", **NR_SMALL)
    env.reset(seed=0)
    for _ in range(20):
        env.step(0)
    obs = np.array(env.unwrapped._obs)
    assert "' '" in env.render() or "'e'" in env.render()  # content shown as the file's characters
    hay = obs[(obs >= 4)]
    assert len(np.unique(hay)) >= 20
    with pytest.raises(ValueError, match="missing.txt"):
        gym.make("NeedleRecall-v0", haystack_path=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="haystack_path"):
        gym.make("NeedleRecall-v0", haystack_path=str(path), haystack_length=5000)


def test_needle_recall_haystack_path_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"haystack_path='.*' is a directory: pass the path of a UTF-8 text file"):
        gym.make("NeedleRecall-v0", haystack_path=str(tmp_path))


def test_needle_recall_haystack_path_that_is_no_regular_file_says_so(tmp_path):
    """/dev/null or a named pipe, which exist, were called "no such file"."""
    import os
    import re

    os.mkfifo(tmp_path / "pipe")
    for path in ("/dev/null", str(tmp_path / "pipe")):
        with pytest.raises(ValueError, match=re.escape(f"haystack_path={path!r} is not a regular file (a device, pipe "
                                                       "or socket): pass the path of a UTF-8 text file")):
            gym.make("NeedleRecall-v0", haystack_path=path)


@pytest.mark.parametrize("content", ["the quick brown fox. ".encode("utf-16-le") * 50, bytes(2000)])
def test_needle_recall_haystack_that_decodes_but_holds_nul_is_refused(tmp_path, content):
    """UTF-16 without a byte-order mark is valid UTF-8 with a NUL between the characters: it was read as a haystack
    of which ~half was NUL; a file of NUL bytes too."""
    (tmp_path / "corpus.txt").write_bytes(content)
    with pytest.raises(ValueError, match=r"haystack_path='.*corpus\.txt' holds NUL characters, so it is no UTF-8 "
                                         r"text .*; save it as UTF-8$"):
        gym.make("NeedleRecall-v0", haystack_path=str(tmp_path / "corpus.txt"))


def _blend_reference(schedule: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The gradual blend episode by episode: within w episodes of the next switch, blend in the next task with
    share (w - episodes to go + 1) / (w + 1)."""
    task, share = schedule.copy(), np.zeros(len(schedule))
    for e in range(len(schedule)):
        later = np.nonzero(schedule[e:] != schedule[e])[0]
        if len(later) and later[0] <= w:
            task[e], share[e] = schedule[e + later[0]], (w - later[0] + 1) / (w + 1)
    return task, share


@pytest.mark.parametrize("tasks, per_task, revisit, window", [(5, 20, False, 5), (3, 1, True, 1), (4, 7, True, 7),
                                                              (2, 3, False, 2), (1, 5, True, 3), (6, 2, True, 2)])
def test_gradual_blend_matches_the_episode_by_episode_definition(tasks, per_task, revisit, window):
    """The blend is computed from the episode index (it scanned the rest of the schedule per episode: 5 x 100,000
    episodes took ~2 minutes to build; then per-episode arrays, 12 GB at 256 tasks x 10^6 episodes x 2)."""
    from envs.continual_shift import ContinualShiftSource

    src = ContinualShiftSource(num_tasks=tasks, episodes_per_task=per_task, shift="gradual", shift_window=window,
                               revisit=revisit)
    schedule = np.repeat(np.tile(np.arange(tasks), 1 + revisit), per_task)  # (n,)
    task, share = _blend_reference(schedule, src.shift_window)
    plans = [src.train_plan(e) for e in range(len(schedule))]  # (task, blended task, share) per episode
    np.testing.assert_array_equal([p[0] for p in plans], schedule)
    np.testing.assert_array_equal([p[1] for p in plans], task)
    np.testing.assert_allclose([p[2] for p in plans], share)
