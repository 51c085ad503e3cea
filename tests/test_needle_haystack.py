"""NeedleRecall's haystack: a user's text numbered by character frequency, the Markov text's sparse transitions, and
write episodes that hide their facts at random places in a haystack cut at a random offset."""

import numpy as np

from envs.haystack import markov_corpus, text_corpus
from envs.needle_recall import FACT
from tests.test_envs_behaviour import rollout


def test_a_text_file_is_numbered_by_falling_character_frequency_and_the_rarest_share_the_last_id(tmp_path):
    path = tmp_path / "hay.txt"
    path.write_text("abacabad" * 3, encoding="utf-8")  # a 12 times, b 6, c 3, d 3 (c before d: first in order)
    symbols, names, _ = text_corpus(path, 8)
    assert names == ["a", "b", "c", "d"]
    assert symbols[:8].tolist() == [0, 1, 0, 2, 0, 1, 0, 3]
    symbols, names, _ = text_corpus(path, 3)
    assert names == ["a", "b", "?"] and symbols[:8].tolist() == [0, 1, 0, 2, 0, 1, 0, 2]


def test_the_markov_text_mostly_follows_each_symbols_few_successors():
    """0.9 of the steps go to one of a symbol's 4 likely successors (the rest to any symbol): a symbol's 4 most
    frequent next symbols take about 0.9 of what follows it, where a uniform stream gives them under 0.2."""
    corpus = markov_corpus(40, 1 << 15, 3)
    pairs = np.zeros((40, 40), dtype=np.int64)
    np.add.at(pairs, (corpus[:-1], corpus[1:]), 1)
    top4 = np.sort(pairs, axis=1)[:, -4:].sum() / pairs.sum()
    assert 0.85 < top4 < 0.95


def test_write_episodes_hide_their_facts_at_random_places_in_haystacks_cut_at_random_offsets():
    K, M, F = 4, 2, 2
    rec, venv = rollout("NeedleRecall-v0", 4, 4, delay=2, facts_per_episode=F, haystack_length=48, cue_length=K,
                        answer_length=M)
    L = venv.episode_length
    places, haystacks = set(), set()
    for e in (0, 1):  # the write episodes of the first cycle
        for obs in rec["obs"][:, e * L:(e + 1) * L]:
            start = np.flatnonzero(obs == FACT)
            assert len(start) == F
            places.add(tuple(start))
            block = (start[:, None] + np.arange(1 + K + M)).ravel()
            haystacks.add(tuple(np.delete(obs, np.concatenate([[0], block])).tolist()))
    assert len(places) >= 6  # 8 episodes x lanes: the blocks' places are drawn (not always right after BOS)
    assert len(haystacks) == 8  # each lane's haystack cut at its own offset (not every time the corpus' start)


def test_a_haystack_file_is_read_without_dozens_of_bytes_a_character(tmp_path):
    """np.unique(return_inverse=True) sorted the whole text: ~40 bytes a character (a 20 MB file, 800 MB)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    size = 4_000_000
    path = tmp_path / "hay.txt"
    path.write_text("".join(rng.choice(list("abcdefghij klmnop\n"), size=size)), encoding="utf-8")
    tracemalloc.start()
    try:
        symbols, names, _ = text_corpus(path, 124)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(symbols) == size and len(names) == 18
    assert peak < 20 * size, f"peak {peak / size:.1f} bytes a character"  # was ~40: np.unique's sort and inverse
