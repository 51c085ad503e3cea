"""FaissStore: exact search against brute force, approximate recall, eviction policies, id validity,
persistence and clear errors."""

import io

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
    store.clear(lanes=[0])
    assert store.size(0) == 0 and len(store) == 4
    assert not store.get(ids[[0, 4]])[1]["found"].any()


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


def fill(store, n, lane=0, importance=None):
    keys = np.eye(store.dim, dtype=np.float32)[np.arange(n) % store.dim] + 0.01
    return store.add(keys, np.arange(n, dtype=np.float32)[:, None] * np.ones((1, store.value_dim)),
                     np.full(n, lane), importance=importance)[0]


def test_fifo_evicts_oldest_first():
    store = FaissStore(8, 1, capacity=4, eviction="fifo")
    ids = fill(store, 4)
    store.search(np.eye(8, dtype=np.float32)[None, :1], 1)  # accesses do not matter for fifo
    new, evicted = store.add(np.ones((2, 8)), np.zeros((2, 1)), [0, 0])
    np.testing.assert_array_equal(evicted, ids[:2])


def test_lru_evicts_least_recently_used():
    store = FaissStore(8, 1, capacity=4, eviction="lru")
    ids = fill(store, 4)
    hit = store.search(np.eye(8, dtype=np.float32)[None, [0, 1]], 1)  # touches ids[0] and ids[1]
    np.testing.assert_array_equal(hit.ids[0, :, 0], ids[:2])
    _, evicted = store.add(np.ones((2, 8)), np.zeros((2, 1)), [0, 0])
    np.testing.assert_array_equal(np.sort(evicted), ids[2:])


def test_lru_entries_returned_by_one_search_are_tied_and_the_oldest_goes_first():
    """The hits of one search got stamps in row order: an entry written into an emptied lower row counted as less
    recent than an older entry returned with it (an audit's case, 2026-12-01)."""
    store = FaissStore(2, 1, capacity=3, eviction="lru")
    ids, _ = store.add(np.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]]), np.zeros((3, 1)), [0, 0, 0])
    (newer,), (evicted,) = store.add(np.array([[0.8, 0.6]]), np.zeros((1, 1)), [0])
    assert evicted == ids[0]  # newer takes row 0, below ids[1]'s row
    hit = store.search(np.array([[[0.8, 0.6]]]), 2)
    assert sorted(hit.ids[0, 0]) == sorted([ids[1], newer])  # returned together
    assert store.add(np.array([[0.0, 1.0]]), np.zeros((1, 1)), [0])[1].tolist() == [ids[2]]  # never returned
    assert store.add(np.array([[0.0, 1.0]]), np.zeros((1, 1)), [0])[1].tolist() == [ids[1]]  # the older of the tie


def test_importance_evicts_lowest_importance_then_oldest():
    store = FaissStore(8, 1, capacity=4, eviction="importance")
    ids = fill(store, 4, importance=[5.0, 1.0, 3.0, 1.0])
    _, evicted = store.add(np.ones((1, 8)), np.zeros((1, 1)), [0], importance=[10.0])
    np.testing.assert_array_equal(evicted, ids[[1]])  # tie at 1.0: the older one goes
    store.search(np.eye(8, dtype=np.float32)[None, [3, 3, 3]], 1)  # three hits lift ids[3] to 4.0
    _, evicted = store.add(np.ones((1, 8)), np.zeros((1, 1)), [0], importance=[10.0])
    np.testing.assert_array_equal(evicted, ids[[2]])


def test_ids_stay_valid_and_unique_after_eviction_and_clear():
    store = FaissStore(8, 2, capacity=5, lanes=2, eviction="fifo")
    seen = []
    for round_ in range(6):
        keys = np.random.default_rng(round_).normal(size=(3, 8))
        values = np.full((3, 2), round_, dtype=np.float32)
        ids, evicted = store.add(keys, values, [round_ % 2] * 3, meta={"episode": [round_] * 3})
        seen.append(ids)
        for old in evicted:
            assert not store.get([old])[1]["found"][0]
        if round_ == 3:
            store.clear()
    all_ids = np.concatenate(seen)
    assert len(np.unique(all_ids)) == len(all_ids)  # never reused, not even after clear()
    values, meta = store.get(seen[-1])
    np.testing.assert_array_equal(values, np.full((3, 2), 5.0))  # live ids read their own entries
    np.testing.assert_array_equal(meta["episode"], [5, 5, 5])
    np.testing.assert_array_equal(meta["lane"], [1, 1, 1])
    assert (store.get(seen[0])[1]["found"] == False).all()  # noqa: E712


def test_search_with_values_and_metadata():
    store = FaissStore(4, 2, capacity=10, lanes=1)
    ids, _ = store.add(np.eye(4)[:3], [[1, 1], [2, 2], [3, 3]], [0, 0, 0],
                       meta={"task": [7, 8, 9], "step": [10, 11, 12]})
    hits = store.search(np.eye(4, dtype=np.float32)[None, [1]], 2, with_values=True)
    assert isinstance(hits, SearchHits)
    assert hits.ids[0, 0, 0] == ids[1]
    np.testing.assert_array_equal(hits.values[0, 0, 0], [2, 2])
    assert hits.meta["task"][0, 0, 0] == 8 and hits.meta["step"][0, 0, 0] == 11 and hits.meta["time"][0, 0, 0] == 0


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip_is_identical(tmp_path, kind):
    rng = np.random.default_rng(4)
    store = FaissStore(16, 3, capacity=1500, lanes=2, index=kind, eviction="lru", hnsw_min_entries=200)
    keys = clustered(rng, 2400, 16, clusters=10)
    store.add(keys, rng.normal(size=(2400, 3)), np.repeat([0, 1], 1200), meta={"task": np.arange(2400)})
    store.remove(np.arange(0, 3000, 11))
    store.save(tmp_path / "s")
    back = FaissStore.load(tmp_path / "s")
    q = keys[None, :6].repeat(2, 0)
    a, b = store.search(q, 7, with_values=True), back.search(q, 7, with_values=True)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.meta["task"], b.meta["task"])
    more = rng.normal(size=(400, 16))
    np.testing.assert_array_equal(store.add(more, np.zeros((400, 3)), [0] * 400)[0],
                                  back.add(more, np.zeros((400, 3)), [0] * 400)[0])  # state carried on


def test_state_dict_loads_with_weights_only():
    store = FaissStore(8, 2, capacity=60, index="ivf", ivf_lists=1)
    store.add(np.random.default_rng(5).normal(size=(45, 8)), np.ones((45, 2)), [0] * 45)
    assert store._ann[0].ready
    buf = io.BytesIO()
    torch.save(store.state_dict(), buf)
    buf.seek(0)
    other = FaissStore(8, 2, capacity=60, index="ivf", ivf_lists=1)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert len(other) == 45
    q = np.ones((1, 2, 8), dtype=np.float32)
    np.testing.assert_array_equal(store.search(q, 3).ids, other.search(q, 3).ids)


def test_damaged_missing_and_mismatched_files_raise_clear_errors(tmp_path):
    store = FaissStore(8, 2, capacity=10)
    store.add(np.ones((3, 8)), np.ones((3, 2)), [0, 0, 0])
    store.save(tmp_path / "a")
    store.save(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no file"):
        FaissStore.load(tmp_path / "missing")
    (index_a,), (index_b,) = (tmp_path / "a").glob("index-*.pt"), (tmp_path / "b").glob("index-*.pt")
    index_a.replace(index_b)  # b's store.pt names its own index file, which now holds a's
    with pytest.raises(ValueError, match="different saves"):
        FaissStore.load(tmp_path / "b")
    data = (tmp_path / "a" / "store.pt").read_bytes()
    (tmp_path / "a" / "store.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged"):
        FaissStore.load(tmp_path / "a")
    with pytest.raises(ValueError, match="dim=8"):
        FaissStore(16, 2, capacity=10).load_state_dict(store.state_dict())


def test_a_save_killed_before_it_commits_leaves_the_previous_store_loadable(tmp_path, monkeypatch):
    import memory.store_io as store_io

    store = FaissStore(8, 2, capacity=10)
    store.add(np.ones((3, 8)), np.ones((3, 2)), [0, 0, 0])
    store.save(tmp_path)
    store.add(2 * np.ones((2, 8)), np.ones((2, 2)), [0, 0])
    real = store_io.atomic_torch_save

    def killed_at_store_pt(obj, path):  # the index file is written, then the process dies
        if path.name == "store.pt":
            raise KeyboardInterrupt("killed")
        real(obj, path)

    monkeypatch.setattr(store_io, "atomic_torch_save", killed_at_store_pt)
    with pytest.raises(KeyboardInterrupt):
        store.save(tmp_path)
    monkeypatch.setattr(store_io, "atomic_torch_save", real)
    assert len(FaissStore.load(tmp_path)) == 3  # the first save, whole
    store.save(tmp_path)  # the next save commits and removes both older index files
    assert len(FaissStore.load(tmp_path)) == 5 and len(list(tmp_path.glob("index-*.pt"))) == 1


def test_a_store_saved_with_the_legacy_index_name_loads(tmp_path):
    store = FaissStore(8, 2, capacity=10)
    store.add(np.ones((3, 8)), np.ones((3, 2)), [0, 0, 0])
    store.save(tmp_path)
    (index,) = tmp_path.glob("index-*.pt")
    index.replace(tmp_path / "index.pt")  # what a save before per-save index names wrote
    body = torch.load(tmp_path / "store.pt", weights_only=True)
    del body["index_file"]
    torch.save(body, tmp_path / "store.pt")
    assert len(FaissStore.load(tmp_path)) == 3


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


def test_metadata_below_minus_one_is_refused_and_never_matches():
    """Regression: ids_with codes (lane, value) as lane * span + value + 1, so a value below -1 ("missing") aliased
    another lane's entry; add refuses such values, and ids_with matches nothing for them."""
    store = FaissStore(2, 1, capacity=4, lanes=2)
    with pytest.raises(ValueError, match=r"meta\['prev'\] has -3: pass values >= 0, or -1 for missing"):
        store.add(np.ones((2, 2)), np.zeros((2, 1)), [0, 1], meta={"prev": [3, -3]})
    assert len(store) == 0
    ids, _ = store.add(np.ones((3, 2)), np.zeros((3, 1)), [0, 0, 1], meta={"prev": [4, 5, -1]})  # -1 is fine
    np.testing.assert_array_equal(store.meta_of(ids, "prev"), [4, 5, -1])
    np.testing.assert_array_equal(store.ids_with("prev", [-3, -1, 4], [1, 1, 0]), [[-1], [ids[2]], [ids[0]]])


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


def test_token_metadata_is_kept_and_read_back_by_id():
    store = FaissStore(4, 2, 8, lanes=2)
    keys = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    ids, _ = store.add(keys, np.zeros((3, 2), np.float32), np.array([0, 1, 1]),
                       meta={"token": np.array([7, 8, 9]), "position": np.array([1, 2, 3])})
    asked = np.array([[ids[2], -1], [ids[0], ids[1]]])
    np.testing.assert_array_equal(store.meta_of(asked, "token"), [[9, -1], [7, 8]])
    store.remove(ids[:1])
    np.testing.assert_array_equal(store.meta_of(ids, "token"), [-1, 8, 9])  # removed -> missing
    np.testing.assert_array_equal(store.keys_of(ids)[0], np.zeros(4))


@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_ids_with_finds_a_lanes_live_entries_by_metadata_newest_first(scope):
    store = FaissStore(4, 2, 8, lanes=2, scope=scope)
    keys = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    prev = np.array([5, 5, 6, 5, 5, 7])
    lanes = np.array([0, 0, 0, 1, 0, 1])
    ids = np.concatenate([store.add(keys[i:i + 1], np.zeros((1, 2), np.float32), lanes[i:i + 1],
                                    meta={"prev": prev[i:i + 1]})[0] for i in range(6)])
    store.remove(ids[1:2])
    found = store.ids_with("prev", np.array([5, 5, 7, 9]), np.array([0, 1, 1, 0]))  # (4, m)
    assert found.shape == (4, 2)
    np.testing.assert_array_equal(found, [[ids[4], ids[0]], [ids[3], -1], [ids[5], -1], [-1, -1]])
    assert FaissStore(4, 2, 8).ids_with("prev", np.array([1]), np.array([0])).shape == (1, 0)  # empty store


def test_ids_with_and_remove_replaced_match_brute_force(monkeypatch):
    """A store with evictions and removals: ids_with lists each (lane, value)'s live ids newest first, and
    remove_replaced removes exactly the same-lane, same-"prev" memories whose key part has cosine >= threshold
    with a new key, whatever its block of pairs (3 here: many blocks)."""
    import memory.retrieval as retrieval

    rng = np.random.default_rng(7)
    store = FaissStore(6, 1, 40, lanes=3, eviction="fifo")
    for _ in range(12):  # 12 x 12 adds into 3 x 40 rows: FIFO evicts, rows are reused
        n = 12
        store.add(rng.normal(size=(n, 6)).astype(np.float32), np.zeros((n, 1), np.float32), rng.integers(0, 3, n),
                  meta={"prev": rng.integers(0, 4, n)})
    live = store._row_id[store._row_id >= 0]
    store.remove(rng.choice(live, 10, replace=False))
    live = store._row_id[store._row_id >= 0]
    lane, prev, seq = (store.meta_of(live, "lane"), store.meta_of(live, "prev"),
                       store._seq[live % store.rows])
    values, lanes = np.array([0, 1, 2, 3, 3, 9]), np.array([0, 1, 2, 0, 2, 1])
    found = store.ids_with("prev", values, lanes)
    for i, (v, b) in enumerate(zip(values, lanes, strict=True)):
        mine = live[(prev == v) & (lane == b)]
        want = mine[np.argsort(-seq[np.isin(live, mine)])]  # newest first
        np.testing.assert_array_equal(found[i][found[i] >= 0], want)

    monkeypatch.setattr(retrieval, "REPLACE_BLOCK", 3)
    new_keys = rng.normal(size=(8, 6)).astype(np.float32)
    new_keys[:4] = store.keys_of(live[:4]) + 0.05 * rng.normal(size=(4, 6)).astype(np.float32)  # near copies
    for j, cos in ((4, 0.805), (5, 0.795)):  # key parts at cosine just above / below the threshold of live[j]
        p = store.keys_of(live[j:j + 1])[0, 2:]
        side = rng.normal(size=4)
        side -= (side @ unit(p)) * unit(p)
        new_keys[j, 2:] = (cos * unit(p) + np.sqrt(1 - cos ** 2) * unit(side)) * np.linalg.norm(p)
    new_prev, new_lanes = store.meta_of(live[:8], "prev"), store.meta_of(live[:8], "lane")
    part, threshold = slice(2, None), 0.8
    want = set()
    for key, p, b in zip(new_keys, new_prev, new_lanes, strict=True):
        for i in live[(prev == p) & (lane == b)]:
            k = store.keys_of(np.array([i]))[0]
            if unit(key[part]) @ unit(k[part]) >= threshold:
                want.add(int(i))
    assert {int(i) for i in live[:5]} <= want and int(live[5]) not in want  # near copies, 0.805 in, 0.795 out

    class Cache:
        def remove(self, ids):
            self.removed = set(ids.tolist())

    cache = Cache()
    gone = retrieval.remove_replaced(store, cache, new_keys, new_prev, new_lanes, threshold, part=part)
    assert set(gone.tolist()) == want == cache.removed
    assert not np.isin(list(want), store._row_id).any()  # gone from the store
