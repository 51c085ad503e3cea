"""Each env against its docstring and the README, read independently of the env's code: token layout, which steps
are scored and with what target, where the answer was shown (`info["distance"]`), the largest distances, the
documented vocabulary bounds and the presets' options. Streams come from `rollout` (explicit resets, so stream
position e L + t is episode e's observation t)."""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401
from tests.examples import examples
from tests.test_envs_behaviour import rollout

EVAL = {"phase": "eval", "task_id": 0}


def least_base(power: int, count: int) -> int:
    """The least n with n ** power >= count."""
    n = 1
    while n**power < count:
        n += 1
    return n


# ----------------------------------------------------------------------------------------------- LongDependency
def check_long_dependency(arr, V, Q, C, gap, L, distances, complete=None):
    """Every documented property of a LongDependency stream (B, E L); `complete`: eval episodes per evaluation."""
    n = (V - 2) // 4
    key0, query0, value0, noise0 = 2, 2 + n, 2 + 2 * n, 2 + 3 * n
    B, S = arr["obs"].shape
    for b in range(B):
        shown = []  # per episode: key -> stream position of its value
        for e in range(S // L):
            o = arr["obs"][b, e * L:(e + 1) * L]
            assert o[0] == 0 and (o[1:] >= 2).all() and (o < V).all()
            keys = np.flatnonzero((o >= key0) & (o < query0))
            values = np.flatnonzero((o >= value0) & (o < noise0))
            assert np.array_equal(values, keys + 1)  # values only inside pairs, right after their key
            assert len(keys) == Q + C and len(set(o[keys].tolist())) == Q + C  # keys distinct in an episode
            here = {int(o[k]): e * L + k + 1 for k in keys}
            queries = np.flatnonzero((o >= query0) & (o < value0))
            scored = np.flatnonzero(arr["scored"][b, e * L:(e + 1) * L])
            assert np.array_equal(scored, queries)
            index = e % complete if complete else e  # an evaluation starts afresh
            assert len(queries) == Q + (C if C and index >= gap else 0)
            for t in queries:
                pos, key = e * L + t, int(o[t]) - n
                d, target = int(arr["distance"][b, pos]), int(arr["target"][b, pos])
                assert arr["obs"][b, pos - d] == target and value0 <= target < noise0
                if key in here and here[key] < pos:
                    assert pos - here[key] == d and d in distances
                else:  # a carried pair, shown `gap` episodes earlier and in none between
                    assert shown[index - gap][key] == pos - d
                    assert all(key not in between for between in shown[index - gap + 1:])
                    assert d <= (gap + 1) * L - 3  # the largest the README names
            shown = [] if complete and index == complete - 1 else shown + [here]


@settings(max_examples=examples(12), deadline=None)
@given(Q=st.integers(1, 4), C=st.integers(0, 3), gap=st.integers(1, 3), extra=st.integers(0, 20),
       distances=st.lists(st.integers(1, 30), min_size=1, max_size=4, unique=True), seed=st.integers(0, 2**32 - 4))
def test_long_dependency_pairs_queries_and_distances_as_documented(Q, C, gap, extra, distances, seed):
    V = 2 + 4 * (gap + 1 if C else 1) * (Q + C) + extra
    L = max(distances) + 3 + 9 * (Q + C) + extra  # the documented least episode_length, and a little more
    kw = dict(vocab_size=V, distances=distances, queries_per_episode=Q, cross_episode_queries=C,
              cross_episode_gap=gap, episode_length=L)
    arr, venv = rollout("LongDependency-v0", 2, 2 * gap + 3, seed=seed, **kw)
    assert venv.eval_episodes == (gap + 1 if C else 1)
    check_long_dependency(arr, V, Q, C, gap, L, distances)
    arr, _ = rollout("LongDependency-v0", 2, 2 * venv.eval_episodes + 1, seed=seed, options=EVAL, **kw)
    check_long_dependency(arr, V, Q, C, gap, L, distances, complete=venv.eval_episodes)


def test_long_dependency_distances_are_drawn_uniformly_and_a_constant_answer_is_at_chance():
    arr, _ = rollout("LongDependency-v0", 16, 8, seed=3, distances=(1, 3, 9, 27), episode_length=200)
    d = arr["distance"][arr["scored"]]
    counts = np.array([(d == x).sum() for x in (1, 3, 9, 27)])
    assert ((counts - d.size / 4) ** 2 / (d.size / 4)).sum() < 16.3  # chi-square, 3 dof, p = 0.001
    n = (256 - 2) // 4
    hits = (arr["target"][arr["scored"]] == 2 + 2 * n).sum()  # always the first value token
    assert abs(hits / d.size - 1 / n) < 4.5 * np.sqrt((1 / n) * (1 - 1 / n) / d.size)


# ----------------------------------------------------------------------------------------------- NeedleRecall
@pytest.mark.parametrize("kw", [dict(delay=3, facts_per_episode=3, haystack_length=20, cue_length=4,
                                     recall_cue_length=2, answer_length=3, train_facts=12, fresh_facts=9),
                                dict(delay=1, facts_per_episode=2, haystack_length=0, cue_length=2,
                                     recall_cue_length=2, answer_length=1, train_facts=2, fresh_facts=2),
                                dict(delay=2, facts_per_episode=1, haystack_length=5, cue_length=1,
                                     recall_cue_length=1, answer_length=4, train_facts=5, fresh_facts=2)])
@pytest.mark.parametrize("options", [None, EVAL])
def test_needle_recall_blocks_targets_and_distances_as_documented(kw, options):
    D, F, H = kw["delay"], kw["facts_per_episode"], kw["haystack_length"]
    K, P, M = kw["cue_length"], kw["recall_cue_length"], kw["answer_length"]
    L = 1 + H + F * (1 + K + M)
    arr, venv = rollout("NeedleRecall-v0", 3, 4 * D, seed=8, options=options, **kw)
    assert venv.episode_length == L and venv.eval_episodes == 2 * D
    pool = {tuple(f) for f in venv.fact_pools["train" if options is None else "fresh"].tolist()}
    largest = (D + 1) * L - K - M - 2  # the README's largest distance across episodes
    for b in range(3):
        written, cycle = [], set()
        for e in range(4 * D):
            span = slice(e * L, (e + 1) * L)
            o, writing = arr["obs"][b, span], e % (2 * D) < D
            assert (arr["phase"][b, span] == ("write" if writing else "recall")).all()
            assert (arr["memory_writes"][b, span] == writing).all() and (arr["delay"][b, span] == (-1 if writing
                                                                                                     else D)).all()
            starts = np.flatnonzero(o == (2 if writing else 3))
            assert len(starts) == F and not (o == (3 if writing else 2)).any()
            if writing:
                assert not arr["scored"][b, span].any()
                cycle = set() if e % (2 * D) == 0 else cycle
                facts = {tuple(o[s + 1:s + 1 + K + M].tolist()): e * L + s + 1 + K for s in starts}
                assert set(facts) <= pool and not set(facts) & cycle  # distinct within a cycle
                cycle |= set(facts)
                written.append({f[:P]: (f, at) for f, at in facts.items()})
                continue
            shown = written.pop(0)
            scored = []
            for s in starts:
                fact, at = shown.pop(tuple(o[s + 1:s + 1 + P].tolist()))  # each fact of write episode e - D, once
                assert tuple(o[s + 1 + P:s + P + M].tolist()) == fact[K:K + M - 1]  # a_1 .. a_(M-1) revealed
                for m in range(M):
                    pos = e * L + s + P + m  # c_P, then a_1 .. a_(M-1): scored with the next answer token
                    scored.append(pos - e * L)
                    assert arr["target"][b, pos] == fact[K + m] == arr["obs"][b, at + m]
                    assert arr["distance"][b, pos] == pos - (at + m) <= largest
            assert not shown and np.array_equal(np.flatnonzero(arr["scored"][b, span]), sorted(scored))


def test_needle_recall_vocab_bound_is_four_plus_the_least_base_whose_power_covers_twice_the_facts():
    for P, facts in ((1, (60, 40)), (2, (1024, 256)), (3, (400, 100))):
        bound = 4 + least_base(P, 2 * sum(facts))
        kw = dict(recall_cue_length=P, cue_length=4, train_facts=facts[0], fresh_facts=facts[1])
        with pytest.raises(ValueError, match="vocab_size"):
            gym.make("NeedleRecall-v0", vocab_size=bound - 1, **kw)
        gym.make("NeedleRecall-v0", vocab_size=bound, **kw)
    assert least_base(2, 2 * 1280) + 4 == 55  # the docstring's figure at the defaults


# ----------------------------------------------------------------------------------------------- ContinualShift
def test_continual_shift_distance_is_3k_minus_1_past_the_first_k_trials_only_in_one_task_episodes():
    K, L = 4, 1 + 3 * 12
    arr, venv = rollout("ContinualShift-v0", 8, 8, seed=2, num_tasks=2, episodes_per_task=4, trials_per_episode=12,
                        keys_per_task=K, shift="gradual", shift_window=3)
    late = np.arange(2 + 3 * K, L, 3)  # key steps after the first K trials
    for e in range(8):
        task = arr["task_id"][:, e * L + late]
        d = arr["distance"][:, e * L + late]
        previous = arr["task_id"][:, e * L + late - 3 * K]
        assert (d[task == previous] == 3 * K - 1).all()
        assert (d[task != previous] != 3 * K - 1).all()  # a blended trial: further back, or -1
    assert (arr["task_id"][:, 3 * L:4 * L] == 1).any()  # episode 3 blends task 1 in


@pytest.mark.parametrize(("tasks", "keys", "overlap"), [(1, 3, 1.0), (5, 32, 1.0), (3, 4, 0.5), (4, 5, 0.0)])
def test_continual_shift_vocab_bound_is_as_the_docstring_gives_it(tasks, keys, overlap):
    shared = round(overlap * keys)
    bound = 2 + tasks + shared + tasks * (keys - shared) + 2 * (max(2, tasks) if shared else 2)
    kw = dict(num_tasks=tasks, keys_per_task=keys, key_overlap=overlap)
    with pytest.raises(ValueError, match="vocab_size"):
        gym.make("ContinualShift-v0", vocab_size=bound - 1, **kw)
    gym.make("ContinualShift-v0", vocab_size=bound, **kw)


# ----------------------------------------------------------------------------------------------- presets, bounds
@pytest.mark.parametrize(("preset", "options"), [
    ("LongDependency-Easy-v0", dict(distances=[1, 2, 4, 8, 16, 32, 64], episode_length=320)),
    ("LongDependency-Hard-v0", dict(distances=[2**i for i in range(13)], episode_length=4608,
                                    cross_episode_queries=4)),
    ("ContinualShift-Gradual-v0", dict(shift="gradual", revisit=True)),
    ("NeedleRecall-Hard-v0", dict(delay=20, facts_per_episode=8, haystack_length=512))])
def test_each_preset_is_its_base_env_with_the_readme_tables_options(preset, options):
    base = preset.split("-")[0] + "-v0"
    a, _ = rollout(preset, 2, 2, seed=4)
    b, _ = rollout(base, 2, 2, seed=4, **options)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_largest_distances_across_episodes_are_the_readmes():
    """LongDependency with cross-episode queries reaches (gap + 1) L - 3, NeedleRecall (delay + 1) L - K - M - 2:
    below `max_distance`, which bounds them."""
    arr, venv = rollout("LongDependency-v0", 256, 20, seed=0, distances=[1], queries_per_episode=1,
                        cross_episode_queries=1, episode_length=22, vocab_size=30)
    assert arr["distance"].max() == 2 * 22 - 3 < venv.max_distance
    kw = dict(delay=1, facts_per_episode=1, haystack_length=2, cue_length=1, recall_cue_length=1, answer_length=1,
              train_facts=4, fresh_facts=4)
    arr, venv = rollout("NeedleRecall-v0", 256, 12, seed=0, **kw)
    assert arr["distance"].max() == 2 * 6 - 1 - 1 - 2 < venv.max_distance
