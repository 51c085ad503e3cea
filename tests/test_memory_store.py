"""FaissStore: exact search against brute force, approximate recall, empty stores, metrics and clear errors."""

import numpy as np
import pytest
import torch

from memory.config import MemoryConfig
from memory.store import FaissStore, SearchHits


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng, n, dim, clusters, spread=0.15):
    """n points around `clusters` unit centres; the centres come from a fixed seed so that queries drawn
    by a second call share them."""
    centers = unit(np.random.default_rng(1234).normal(size=(clusters, dim)))
    return (centers[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
            ).astype(np.float32)


def brute_topk(keys, queries, k):
    """keys (N, D), queries (Q, D) -> indices (Q, k) by cosine, best first."""
    scores = unit(queries) @ unit(keys).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], np.sort(scores, axis=1)[:, ::-1][:, :k]


def test_exact_search_matches_bruteforce_per_lane():
    rng = np.random.default_rng(0)
    store = FaissStore(24, 3, capacity=300, lanes=3, scope="lane", exact_block=64)  # several blocks
    keys = rng.normal(size=(3, 250, 24)).astype(np.float32)
    ids = [store.add(keys[b], rng.normal(size=(250, 3)), np.full(250, b))[0] for b in range(3)]
    removed = ids[1][::7]
    assert store.remove(removed) == len(removed)
    q = rng.normal(size=(3, 5, 24)).astype(np.float32)
    res = store.search(torch.from_numpy(q), 10)
    assert res.scores.shape == (3, 5, 10) and res.ids.dtype == np.int64
    for b in range(3):
        live = ~np.isin(ids[b], removed)
        idx, scores = brute_topk(keys[b][live], q[b], 10)
        np.testing.assert_array_equal(res.ids[b], ids[b][live][idx])
        np.testing.assert_allclose(res.scores[b], scores, atol=1e-5)


def test_shared_scope_searches_all_lanes_and_pads_missing():
    rng = np.random.default_rng(1)
    store = FaissStore(8, 2, capacity=50, lanes=4, scope="shared")
    keys = rng.normal(size=(6, 8)).astype(np.float32)
    ids, _ = store.add(keys, np.zeros((6, 2)), [0, 1, 2, 3, 0, 1])
    res = store.search(keys[None, :2], 9)  # one row of two queries over all 6 entries
    assert res.ids.shape == (1, 2, 9)
    np.testing.assert_array_equal(res.ids[0, :, 0], ids[:2])  # each key finds itself first
    assert (res.ids[..., 6:] == -1).all() and np.isneginf(res.scores[..., 6:]).all()
    assert store.size(0) == 2 and store.size(3) == 1 and len(store) == 6
    np.testing.assert_array_equal(np.sort(store.clear(lanes=[0])), np.sort(ids[[0, 4]]))  # the removed ids
    assert store.size(0) == 0 and len(store) == 4
    assert not store.get(ids[[0, 4]])[1]["found"].any()
    assert len(store.clear(lanes=[0])) == 0
    np.testing.assert_array_equal(np.sort(store.clear()), np.sort(ids[[1, 2, 3, 5]]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_on_clustered_data(kind):
    rng = np.random.default_rng(2)
    n, dim = 20000, 32
    keys = clustered(rng, n, dim, clusters=64)
    store = FaissStore(dim, 1, capacity=n, lanes=1, scope="shared", index=kind, hnsw_min_entries=1000)
    ids, _ = store.add(keys, np.zeros((n, 1)), np.zeros(n, dtype=int))
    assert store._ann[0].ready  # the approximate index is the one answering
    q = clustered(rng, 200, dim, clusters=64)
    res = store.search(q[None], 8)
    truth, _ = brute_topk(keys, q, 8)
    recall = np.mean([len(set(res.ids[0, i]) & set(ids[truth[i]])) / 8 for i in range(200)])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_never_returns_removed_entries(kind):
    rng = np.random.default_rng(3)
    keys = clustered(rng, 4000, 16, clusters=20)
    # 20 lists (780 entries) / 500 entries: the 1,000 left keep the index answering (below that, search is exact)
    store = FaissStore(16, 1, capacity=4000, scope="shared", index=kind, ivf_lists=20, hnsw_min_entries=500)
    ids, _ = store.add(keys, np.zeros((4000, 1)), np.zeros(4000, dtype=int))
    store.remove(ids[:3000])
    assert store._ann[0].ready and len(store) >= store._ann[0].min_entries
    res = store.search(keys[None, :50], 5)
    assert np.isin(res.ids[res.ids >= 0], ids[3000:]).all()
    assert (res.ids[0, 30:, 0] >= 0).all()


def test_search_with_values_and_metadata():
    store = FaissStore(4, 2, capacity=10, lanes=1)
    ids, _ = store.add(np.eye(4)[:3], [[1, 1], [2, 2], [3, 3]], [0, 0, 0],
                       meta={"task": [7, 8, 9], "step": [10, 11, 12]})
    hits = store.search(np.eye(4, dtype=np.float32)[None, [1]], 2, with_values=True)
    assert isinstance(hits, SearchHits)
    assert hits.ids[0, 0, 0] == ids[1]
    np.testing.assert_array_equal(hits.values[0, 0, 0], [2, 2])
    assert hits.meta["task"][0, 0, 0] == 8 and hits.meta["step"][0, 0, 0] == 11 and hits.meta["time"][0, 0, 0] == 0


def test_bad_input_raises_value_errors():
    with pytest.raises(ValueError, match="scope='global'"):
        FaissStore(8, 2, 10, scope="global")
    with pytest.raises(ValueError, match="capacity=0"):
        FaissStore(8, 2, 0)
    store = FaissStore(8, 2, capacity=4, lanes=2)
    with pytest.raises(ValueError, match="lanes must lie in"):
        store.add(np.ones((1, 8)), np.ones((1, 2)), [2])
    with pytest.raises(ValueError, match=r"keys \(1, 7\), .* must agree: keys \(n, 8\)"):
        store.add(np.ones((1, 7)), np.ones((1, 2)), [0])
    with pytest.raises(ValueError, match="exceed capacity=4"):
        store.add(np.ones((5, 8)), np.ones((5, 2)), [0] * 5)
    with pytest.raises(ValueError, match="meta keys"):
        store.add(np.ones((1, 8)), np.ones((1, 2)), [0], meta={"colour": [1]})
    with pytest.raises(ValueError, match="one query row per lane"):
        store.search(np.ones((3, 1, 8)), 2)
    with pytest.raises(ValueError, match="finite"):
        store.add(np.full((1, 8), np.nan), np.ones((1, 2)), [0])
    assert len(store) == 0  # failed calls changed nothing


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_searching_an_empty_store_gives_no_hits(precision, scope):
    """Regression: an empty store (new, or after clear()) scanned with a block of 0 rows and raised
    "range() arg 3 must not be zero"; fewer than k entries means ids -1 and scores -inf."""
    rng = np.random.default_rng(3)
    store = FaissStore(4, 2, capacity=3, lanes=2, scope=scope, precision=precision)
    q = rng.normal(size=(2, 2, 4)).astype(np.float32)

    def assert_empty(res, k):
        assert res.ids.shape == res.scores.shape == (2, 2, k)
        assert (res.ids == -1).all() and np.isneginf(res.scores).all()

    assert_empty(store.search(q, 2), 2)
    ids, _ = store.add(rng.normal(size=(2, 4)), np.ones((2, 2)), [0, 1])
    assert set(store.search(q, 5).ids.ravel().tolist()) == {-1, *ids.tolist()}
    store.clear()
    assert_empty(store.search(q, 2), 2)
    hits = store.search(q, 3, with_values=True)
    assert_empty(hits, 3)
    assert not hits.values.any() and not hits.meta["found"].any()


@pytest.mark.parametrize("emptied_by", ["remove", "clear"])
def test_an_hnsw_partition_emptied_after_its_graph_was_built_gives_no_hits(emptied_by):
    """Regression: removing every entry of an HNSW partition rebuilt an empty graph, whose search then indexed an
    empty node -> row table (IndexError)."""
    rng = np.random.default_rng(0)
    store = FaissStore(8, 1, capacity=64, index="hnsw", hnsw_min_entries=10)
    ids, _ = store.add(rng.normal(size=(30, 8)), np.zeros((30, 1)), np.zeros(30, np.int64))
    assert store._ann[0].ready
    if emptied_by == "remove":
        store.remove(ids)
    else:
        store.clear(lanes=[0])
    res = store.search(rng.normal(size=(1, 2, 8)), 3)
    assert (res.ids == -1).all() and np.isneginf(res.scores).all()
    new, _ = store.add(rng.normal(size=(1, 8)), np.zeros((1, 1)), [0])  # the emptied graph takes entries again
    np.testing.assert_array_equal(store.search(rng.normal(size=(1, 1, 8)), 2).ids, [[[new[0], -1]]])


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_queries_are_refused_for_every_metric(metric, bad):
    """Regression: metric="ip" searched NaN queries (NaN scores, arbitrary ids) instead of refusing them."""
    store = FaissStore(4, 1, capacity=4, lanes=2, metric=metric)
    store.add(np.eye(4)[:3], np.zeros((3, 1)), [0, 0, 1])
    q = np.ones((2, 1, 4), dtype=np.float32)
    q[1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"^FaissStore: queries must be finite \(got NaN or inf\)$"):
        store.search(q, 2)


def test_from_config_and_nbytes():
    cfg = MemoryConfig(dim=16, store_capacity=32, store_scope="shared", store_eviction="lru")
    store = FaissStore.from_config(cfg, lanes=4, value_dim=16)
    assert (store.dim, store.capacity, store.scope, store.eviction, store.partitions) == (16, 32, "shared", "lru", 1)
    assert store.nbytes >= 32 * (16 + 16) * 4


def test_ip_metric_ranks_by_inner_product_and_cosine_by_angle():
    """A long key at 45 degrees beats a unit key on the query's axis by inner product, not by cosine."""
    keys = np.array([[1.0, 0.0], [3.0, 3.0]], dtype=np.float32)
    query = np.array([[[1.0, 0.0]]], dtype=np.float32)  # (B=1, Q=1, D=2)
    first = {}
    for metric in ("cosine", "ip"):
        store = FaissStore(2, 1, 8, metric=metric)
        ids, _ = store.add(keys, np.zeros((2, 1), np.float32), np.zeros(2, np.int64))
        found = store.search(query, 2)
        first[metric] = int(found.ids[0, 0, 0]) == int(ids[1])
        expected = [3.0, 1.0] if metric == "ip" else [1.0, 2 ** -0.5]
        np.testing.assert_allclose(sorted(found.scores[0, 0], reverse=True), expected, rtol=1e-5)
        np.testing.assert_allclose(store.keys_of(ids)[1], keys[1] if metric == "ip" else keys[1] / 18 ** 0.5,
                                   rtol=1e-6)
    assert first == {"cosine": False, "ip": True}


def test_metric_is_validated_and_part_of_the_saved_settings():
    with pytest.raises(ValueError, match="metric"):
        FaissStore(2, 1, 8, metric="l2")
    saved = FaissStore(2, 1, 8, metric="ip").state_dict()
    with pytest.raises(ValueError, match="metric"):
        FaissStore(2, 1, 8, metric="cosine").load_state_dict(saved)
