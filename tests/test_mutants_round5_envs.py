"""Mutation-testing kills (round 5) for LongDependency, NeedleRecall, the haystack corpora and LastReveals."""

import os

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)

EVAL = {"phase": "eval", "task_id": 0}


# ----------------------------------------------------------------------------------------------- LongDependency
def test_long_dependency_render_names_each_token_by_its_range():
    """`render` names k_i, q_i, v_j by the documented ranges: the first query token is q0, not a key k_n."""
    env = gym.make("LongDependency-v0", vocab_size=72, render_mode="ansi")  # n = 17
    src = env.unwrapped._source
    n = 17
    names = {0: "BOS", 1: "EOS", 2: "k0", 1 + n: f"k{n - 1}", 2 + n: "q0", 1 + 2 * n: f"q{n - 1}",
             2 + 2 * n: "v0", 1 + 3 * n: f"v{n - 1}", 2 + 3 * n: ".", 71: "."}
    assert {t: src.token_name(t) for t in names} == names


def test_long_dependency_episodes_always_allow_memory_writes():
    """LongDependency never forbids writes: `memory_writes` is True on every step, train and eval alike."""
    env = gym.make("LongDependency-v0", queries_per_episode=2, episode_length=60, distances=(1, 4))
    for options in (None, EVAL):
        _, info = env.reset(seed=0, options=options)
        writes, terminated = [info["memory_writes"]], False
        while not terminated:
            _, _, terminated, _, info = env.step(0)
            writes.append(info["memory_writes"])
        assert all(writes) and info["delay"] == -1


def test_long_dependency_cross_episode_gap_takes_up_to_1000():
    """cross_episode_gap accepts its whole range [1, 1000] and refuses 1001, naming the option."""
    kw = dict(queries_per_episode=1, cross_episode_queries=1, distances=(1,), episode_length=40)
    env = gym.make("LongDependency-v0", vocab_size=2 + 4 * 1001 * 2, cross_episode_gap=1000, **kw)
    assert env.unwrapped.eval_episodes == 1001
    with pytest.raises(ValueError, match="cross_episode_gap"):
        gym.make("LongDependency-v0", vocab_size=2 + 4 * 1002 * 2, cross_episode_gap=1001, **kw)


@pytest.mark.parametrize("gap", [1, 2])
def test_long_dependency_vocab_bound_counts_every_key_group(gap):
    """With cross-episode queries, keys rotate through gap + 1 groups: a vocabulary one short of
    2 + 4 (gap + 1)(Q + C) is refused with a ValueError naming vocab_size (not a crash in reset)."""
    Q, C = 3, 2
    kw = dict(queries_per_episode=Q, cross_episode_queries=C, cross_episode_gap=gap, distances=(1, 2),
              episode_length=60)
    bound = 2 + 4 * (gap + 1) * (Q + C)
    with pytest.raises(ValueError, match="vocab_size"):
        gym.make("LongDependency-v0", vocab_size=bound - 1, **kw)
    env = gym.make("LongDependency-v0", vocab_size=bound, **kw)
    env.reset(seed=0)


def test_long_dependency_start_evaluation_skips_the_rest_of_a_three_episode_evaluation():
    """gap=2: an evaluation is 3 eval episodes (Q, Q, Q + C scored). After one of them, start_evaluation skips the
    other two, so the next three are again a complete evaluation (not one that ends after two)."""
    venv = gym.make_vec("LongDependency-v0", num_envs=1, vectorization_mode="vector_entry_point", distances=(1, 2),
                        queries_per_episode=2, cross_episode_queries=1, cross_episode_gap=2, episode_length=60)

    def scored(n):
        counts = []
        for _ in range(n):
            _, info = venv.reset(options=EVAL)
            total, terminated = int(info["scored"][0]), False
            while not terminated:
                _, _, term, _, info = venv.step(np.zeros(1, dtype=np.int64))
                total, terminated = total + int(info["scored"][0]), term[0]
            counts.append(total)
        return counts

    venv.reset(seed=0)
    assert scored(1) == [2]
    venv.start_evaluation()
    assert scored(3) == [2, 2, 3]


# ----------------------------------------------------------------------------------------------- NeedleRecall
def test_needle_recall_vocab_message_names_the_least_base_when_its_power_is_exactly_twice_the_facts():
    """2 x 3,888 facts = 6^5, and 7776 ** (1/5) rounds up past 6: the message still asks for 4 + 6 tokens."""
    kw = dict(cue_length=5, recall_cue_length=5, train_facts=3000, fresh_facts=888)
    with pytest.raises(ValueError, match=r"vocab_size=9 is too small .*needs at least 10$"):
        gym.make("NeedleRecall-v0", vocab_size=9, **kw)
    gym.make("NeedleRecall-v0", vocab_size=10, **kw)


def test_needle_recall_render_names_content_tokens_beyond_a_small_texts_characters(tmp_path):
    """A text haystack with fewer distinct characters than content tokens: tokens past them render as c<i>
    (the last character's token by its character), not an IndexError."""
    path = tmp_path / "hay.txt"
    path.write_text("aab" * 200, encoding="utf-8")
    env = gym.make("NeedleRecall-v0", haystack_path=str(path), render_mode="ansi")
    src = env.unwrapped._source
    assert [src.token_name(t) for t in (2, 3, 4, 5, 6, 7)] == ["FACT", "RECALL", "'a'", "'b'", "c2", "c3"]
    env.reset(seed=0)
    assert env.render().startswith("[NeedleRecall-v0 write step 0/")


def _episode_obs(env, **reset) -> np.ndarray:
    """The acted-upon observations 0 .. L-1 of one scalar episode."""
    obs, _ = env.reset(**reset)
    seen = [obs]
    for _ in range(env.unwrapped.episode_length - 1):
        seen.append(env.step(0)[0])
    env.step(0)
    return np.array(seen)


def test_needle_recall_a_haystack_file_exactly_as_long_as_a_recall_haystack_is_cut_from_its_start(tmp_path):
    """A text of exactly the recall haystack's length (the least accepted) fits one way only: a recall episode's
    haystack is the whole text, in order (the offset is drawn from [0, len(text) - haystack], both ends included)."""
    kw = dict(delay=1, facts_per_episode=1, haystack_length=10, cue_length=2, recall_cue_length=1, answer_length=1,
              train_facts=2, fresh_facts=2)
    path = tmp_path / "hay.txt"
    path.write_text("abcdefghijkl", encoding="utf-8")  # 15 - 1 - (1 + 1) = 12 recall haystack tokens
    env = gym.make("NeedleRecall-v0", haystack_path=str(path), **kw)
    for seed in range(3):
        _episode_obs(env, seed=seed)  # the write episode
        obs = _episode_obs(env)  # the recall episode: RECALL c_1, then a_1 is asked at c_1's step
        s = int(np.flatnonzero(obs == 3)[0])
        hay = np.delete(obs, [0, s, s + 1])
        assert np.array_equal(hay, 4 + np.arange(12))


def test_needle_recall_fact_pools_are_copies_that_cannot_change_the_env():
    """`fact_pools` hands out copies: writing into them changes neither a later read nor the facts episodes show."""
    kw = dict(delay=1, facts_per_episode=2, haystack_length=8, train_facts=4, fresh_facts=4)
    env = gym.make("NeedleRecall-v0", **kw)
    pools = env.unwrapped.fact_pools
    before = {k: v.copy() for k, v in pools.items()}
    for v in pools.values():
        v[:] = 4
    again = env.unwrapped.fact_pools
    assert all(np.array_equal(again[k], before[k]) for k in before)
    venv = gym.make_vec("NeedleRecall-v0", num_envs=1, vectorization_mode="vector_entry_point", **kw)
    for v in venv.fact_pools.values():
        v[:] = 4
    assert all(np.array_equal(venv.fact_pools[k], before[k]) for k in before)


# ----------------------------------------------------------------------------------------------- haystack corpora
def test_the_markov_texts_likely_successors_never_include_the_symbol_itself():
    """No long runs of one character: a symbol follows itself only through the uniform jump (0.1 / symbols)."""
    from envs.haystack import markov_corpus

    for seed in range(3):
        corpus = markov_corpus(8, 1 << 15, seed)
        same = np.bincount(corpus[:-1][corpus[1:] == corpus[:-1]], minlength=8)
        assert (same / np.bincount(corpus[:-1], minlength=8) < 0.04).all()  # 0.0125 expected


def test_the_cached_markov_corpus_is_read_only():
    """Every env with the same arguments shares one cached corpus: it cannot be written through."""
    from envs.haystack import markov_corpus

    corpus = markov_corpus(16, 1024, 5)
    with pytest.raises(ValueError, match="read-only"):
        corpus[0] = 1


def test_characters_of_equal_frequency_are_numbered_in_code_point_order(tmp_path):
    """Ties in frequency keep code point order (a stable sort), also past a few dozen distinct characters."""
    from envs.haystack import text_corpus

    chars = [chr(0x100 + i) for i in range(60)]
    twice = chars[::7]  # every 7th character twice, the rest once
    text = "".join(chars) + "".join(twice)
    path = tmp_path / "hay.txt"
    path.write_text("".join(np.random.default_rng(0).permutation(list(text))), encoding="utf-8")
    _, names, _ = text_corpus(path, 64)
    assert names == twice + [c for c in chars if c not in twice]


@pytest.mark.skipif(not os.path.isfile("/proc/self/mem"), reason="needs Linux's /proc/self/mem")
def test_a_haystack_file_that_fails_to_read_is_one_value_error_line():
    """A regular file whose read fails (an OSError, here EIO) is a ValueError naming haystack_path."""
    from envs.haystack import text_corpus

    with pytest.raises(ValueError, match=r"^haystack_path='/proc/self/mem' cannot be read as UTF-8 text"):
        text_corpus("/proc/self/mem", 8)


@pytest.mark.parametrize("value", [3, ["hay.txt"], b"hay.txt"])
def test_a_haystack_path_that_is_no_path_is_refused_as_such(value):
    from envs.haystack import text_corpus

    with pytest.raises(ValueError, match="haystack_path must be a path to a UTF-8 text file"):
        text_corpus(value, 8)
