"""FaissStore at the edges of its arguments: a k far beyond what a search can fill, and keys of large but
finite magnitude (whose float32 squared norm overflows)."""

import numpy as np
import pytest

from agents.memnet_store import FETCH_FACTOR
from memory.config import MemoryConfig
from memory.store import FaissStore
from memory.store_lookup import normalise

BIG = 1e20  # per component: |x|^2 overflows float32 (max ~3.4e38) for every key width


def filled(scope="lane", lanes=2, capacity=8, metric="cosine", n=3):
    rng = np.random.default_rng(0)
    store = FaissStore(4, 1, capacity=capacity, lanes=lanes, scope=scope, metric=metric)
    store.add(rng.normal(size=(n * lanes, 4)), np.zeros((n * lanes, 1)), np.repeat(np.arange(lanes), n))
    return store


@pytest.mark.parametrize("k", [10**12, 2**70, np.int64(10**12)])
@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_a_huge_k_is_refused_in_one_line_naming_the_limit_and_the_fix(k, scope):
    """Regression: k=10**12 reached np.full and raised numpy's MemoryError (3.64 TiB) instead of a clear error."""
    store = filled(scope)
    stamps = store._stamp.copy()
    with pytest.raises(ValueError, match=rf"^FaissStore\.search: k={k}: at most 8388608 for B x Q = 2 x 1 queries "
                                         r"\(a query finds at most capacity=8 entries, .*\); pass k <= 8$"):
        store.search(np.ones((2, 1, 4)), k)
    np.testing.assert_array_equal(store._stamp, stamps)  # a refused search is no access


def test_the_k_limit_is_the_padding_budget_over_all_queries_or_the_capacity():
    store = filled(capacity=8)
    with pytest.raises(ValueError, match=r"^FaissStore\.search: k=4097: at most 4096 for B x Q = 2 x 2048 "):
        store.search(np.ones((2, 2048, 4)), 4097)  # 2**24 ids over 4,096 queries
    big = filled(capacity=5000)
    with pytest.raises(ValueError, match=r"k=5001: at most 5000 for B x Q = 2 x 2048 .*pass k <= 5000$"):
        big.search(np.ones((2, 2048, 4)), 5001)  # the capacity is the larger bound


@pytest.mark.parametrize(("scope", "capacity", "n", "k", "found"), [
    ("lane", 8, 3, 1, 1), ("lane", 8, 3, 8, 3), ("shared", 64, 3, 8, 6),  # benchmarks/memory.py: k=8
    ("shared", 3, 1, 5, 2), ("lane", 3, 3, 5, 3),  # tests/test_memory_store.py: a small store, k beyond capacity
    ("lane", 16, 3, FETCH_FACTOR * MemoryConfig().store_top_k, 3),  # MemNet: store_capacity=16 (train.chunk=16)
])
def test_k_values_that_callers_use_still_work_and_pad(scope, capacity, n, k, found):
    store = filled(scope, capacity=capacity, n=n)
    res = store.search(np.ones((2, 3, 4)), k)
    assert res.ids.shape == res.scores.shape == (2, 3, k)
    assert (res.ids[..., :found] >= 0).all() and (res.ids[..., found:] == -1).all()
    assert np.isneginf(res.scores[..., found:]).all() and np.isfinite(res.scores[..., :found]).all()


def test_a_k_beyond_the_capacity_within_the_budget_is_answered():
    store = filled(capacity=8)
    res = store.search(np.ones((2, 2048, 4)), 16)  # 4,096 allowed for these 4,096 queries: twice the capacity is
    assert res.ids.shape == (2, 2048, 16) and (res.ids[..., 3:] == -1).all()


@pytest.mark.parametrize("scale", [BIG, 3e38])
def test_large_finite_keys_are_stored_and_found_with_metric_cosine(scale):
    """Regression: a 1e20-per-component key was refused as "NaN or inf" (its float32 squared norm overflowed)."""
    store = FaissStore(4, 1, capacity=8, metric="cosine")
    keys = np.eye(4, dtype=np.float32)[:3] * np.float32(scale)
    ids, _ = store.add(keys, np.arange(3.0)[:, None], [0, 0, 0])
    np.testing.assert_allclose(store.keys_of(ids), np.eye(4)[:3], rtol=1e-6)  # normalised as small keys are
    for q in (np.eye(4)[None, :3], np.eye(4)[None, :3] * scale):  # unit queries, and queries as large
        res = store.search(q.astype(np.float32), 1)
        np.testing.assert_array_equal(res.ids[0, :, 0], ids)
        np.testing.assert_allclose(res.scores[0, :, 0], 1.0, rtol=1e-6)


def old_normalise(x):
    """The normalisation before large keys were taken: float32 factors from float32 squared norms."""
    return x * (1.0 / np.sqrt(np.maximum(np.einsum("...i,...i->...", x, x), 1e-24))).astype(np.float32)[..., None]


def test_normal_keys_and_queries_are_normalised_bit_for_bit_as_before_also_next_to_a_large_one():
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(5, 16)).astype(np.float32)
    alone, mixed = FaissStore(16, 1, capacity=8), FaissStore(16, 1, capacity=8)
    a, _ = alone.add(keys, np.zeros((5, 1)), np.zeros(5, np.int64))
    m, _ = mixed.add(np.vstack([keys, np.full((1, 16), BIG, np.float32)]), np.zeros((6, 1)), np.zeros(6, np.int64))
    assert alone.keys_of(a).tobytes() == mixed.keys_of(m[:5]).tobytes() == old_normalise(keys).tobytes()
    q = rng.normal(size=(1, 4, 16)).astype(np.float32)
    big = np.concatenate([q, np.full((1, 1, 16), BIG, np.float32)], 1)
    assert normalise(q, "queries").tobytes() == old_normalise(q).tobytes()
    assert normalise(big, "queries")[:, :4].tobytes() == old_normalise(q).tobytes()
    assert normalise(big, "queries").dtype == np.float32
    np.testing.assert_array_equal(mixed.search(big, 1).ids[0, :, 0], [*alone.search(q, 1).ids[0, :, 0], m[5]])


def test_keys_beyond_what_inner_products_can_hold_are_refused_honestly_with_metric_ip():
    store = FaissStore(4, 1, capacity=8, metric="ip")
    with pytest.raises(ValueError, match=r"^FaissStore: keys of norm up to 1\.84e\+19 are supported with "
                                         r"metric='ip' \(the scan's inner products must fit float32\); got norm "
                                         r"2e\+20; scale them down, or use metric='cosine'$"):
        store.add(np.full((1, 4), BIG), np.zeros((1, 1)), [0])
    assert len(store) == 0
    ids, _ = store.add(np.eye(4)[:2] * 1e19, np.zeros((2, 1)), [0, 0])  # within the bound: stored as given
    res = store.search(np.eye(4, dtype=np.float32)[None, :2], 1)
    np.testing.assert_array_equal(res.ids[0, :, 0], ids)
    np.testing.assert_allclose(res.scores[0, :, 0], 1e19, rtol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_keys_and_queries_are_still_refused_as_such(metric, bad):
    store = FaissStore(4, 1, capacity=8, metric=metric)
    keys = np.full((2, 4), BIG if metric == "cosine" else 1.0)  # a large finite row next to the bad one
    keys[1, 2] = bad
    with pytest.raises(ValueError, match=r"^FaissStore: keys must be finite \(got NaN or inf\)$"):
        store.add(keys, np.zeros((2, 1)), [0, 0])
    assert len(store) == 0
    store.add(np.eye(4)[:1], np.zeros((1, 1)), [0])
    with pytest.raises(ValueError, match=r"^FaissStore: queries must be finite \(got NaN or inf\)$"):
        store.search(keys[None].astype(np.float32), 1)


def test_ip_queries_beyond_the_norm_limit_are_refused_like_keys():
    """Regression: an ip query of norm ~2e20 against a key of norm 1e19 scored inf (float32 overflow), so top-k
    ranked nothing; queries now keep to the keys' limit, which bounds every inner product."""
    store = FaissStore(4, 1, capacity=8, metric="ip")
    store.add(np.eye(4)[:2] * 1e19, np.zeros((2, 1)), [0, 0])
    with pytest.raises(ValueError, match=r"^FaissStore: queries of norm up to 1\.84e\+19 are supported with "
                                         r"metric='ip' .*got norm 2e\+20; scale them down, or use metric='cosine'$"):
        store.search(np.full((1, 1, 4), BIG, dtype=np.float32), 1)
    res = store.search(np.eye(4, dtype=np.float32)[None, :1] * 1e19, 1)  # at the bound: finite scores
    assert np.isfinite(res.scores).all() and res.ids[0, 0, 0] >= 0


def test_remove_replaced_compares_large_finite_keys_of_a_cosine_store_by_direction():
    """Regression: remove_replaced took float32 norms, so keys of magnitude ~1e20 (squares overflow) had cosine 0
    and replaced nothing. Now a same-direction key replaces them whatever its scale; another direction does not."""
    from memory.retrieval import remove_replaced

    class Cache:
        def remove(self, ids):
            self.removed = set(ids.tolist())

    rng = np.random.default_rng(1)
    direction = rng.normal(size=(2, 4))
    store = FaissStore(4, 1, capacity=8, metric="cosine")
    ids, _ = store.add(direction * BIG, np.zeros((2, 1)), [0, 0], meta={"prev": np.array([5, 5])})
    cache = Cache()
    gone = remove_replaced(store, cache, direction[:1] * BIG * 2, np.array([5]), np.array([0]), 0.99)  # large
    np.testing.assert_array_equal(gone, ids[:1])
    assert cache.removed == {int(ids[0])} and len(store) == 1
    gone = remove_replaced(store, cache, direction[1:] * 3.0, np.array([5]), np.array([0]), 0.99)  # small
    np.testing.assert_array_equal(gone, ids[1:])
    store.add(direction[1:] * BIG, np.zeros((1, 1)), [0], meta={"prev": np.array([5])})
    kept = remove_replaced(store, cache, direction[:1] * BIG, np.array([5]), np.array([0]), 0.99)  # other direction
    assert kept.size == 0 and len(store) == 1
