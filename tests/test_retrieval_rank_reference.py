"""`memory.retrieval.rank` against the order README "Memory attention and fusion" describes, written out plainly:
in score order, each group of equals starts at its best candidate and holds the finite ones within 1e-4 x the
row's largest finite |score| below it; within a group the later written first (then the larger id); non-finite
scores rank alone, after the finite ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from memory.retrieval import rank
from tests.examples import examples


def documented_order(scores, ids, time):
    finite = [j for j in range(len(scores)) if np.isfinite(scores[j])]
    finite.sort(key=lambda j: -scores[j])
    tol = 1e-4 * max([abs(scores[j]) for j in finite] or [0.0])
    groups: list[list[int]] = []
    for j in finite:
        if groups and scores[groups[-1][0]] - scores[j] <= tol:
            groups[-1].append(j)
        else:
            groups.append([j])
    out = [j for g in groups for j in sorted(g, key=lambda j: (-time[j], -ids[j]))]
    return out, [j for j in range(len(scores)) if not np.isfinite(scores[j])]


base = st.sampled_from([0.0, 1.0, -1.0, 3.0, 1e-3, 250.0])
jitter = st.sampled_from([0.0, 1e-9, 5e-5, 9.9e-5, 1e-4, 1.01e-4, 2e-4, 1e-3, -5e-5, -2e-4])
special = st.sampled_from([-np.inf, np.inf, np.nan])
entry = st.one_of(st.tuples(base, jitter).map(lambda t: t[0] * (1 + t[1]) + t[1]), special)


@settings(max_examples=examples(300), deadline=None)
@given(rows=st.lists(st.lists(st.tuples(entry, st.integers(0, 3)), min_size=6, max_size=6), min_size=1, max_size=3))
def test_rank_is_the_documented_order(rows):
    scores = np.array([[s for s, _ in r] for r in rows])
    time = np.array([[t for _, t in r] for r in rows])
    ids = np.tile(np.arange(6), (len(rows), 1)) * 7 % 6  # distinct ids, not in position order
    got = rank(scores, ids, time)
    for b in range(len(rows)):
        want, rest = documented_order(scores[b], ids[b], time[b])
        assert got[b, : len(want)].tolist() == want, (scores[b], time[b], got[b], want)
        assert sorted(got[b, len(want):].tolist()) == rest
