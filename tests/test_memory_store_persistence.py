"""FaissStore persistence: save/load round trips, state dicts, damaged or interrupted saves, legacy files."""

import io
import re

import numpy as np
import pytest
import torch

from memory.store import FaissStore
from tests.test_memory_store import clustered


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


def test_a_save_removes_only_its_own_older_index_files(tmp_path):
    """A save into a folder that also held a user's files named index.pt, index-best.pt and index-notes.pt deleted
    all three (a glob of index-*.pt): now only the index file store.pt names and those of killed saves go."""
    store = FaissStore(8, 2, capacity=10)
    store.add(np.ones((3, 8)), np.ones((3, 2)), [0, 0, 0])
    mine = {name: f"user file {name}".encode() for name in ("index.pt", "index-best.pt", "index-notes.pt",
                                                             "index-0123.pt", "store.pt.bak")}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    killed = tmp_path / f"index-{'ab' * 16}.pt"  # a save killed before its store.pt: its index file is left
    killed.write_bytes(b"left by a killed save")
    store.save(tmp_path)
    (first,) = (p for p in tmp_path.glob("index-*.pt") if len(p.stem) == 38)
    store.save(tmp_path)
    assert not first.exists() and not killed.exists()
    for name, data in mine.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert len(FaissStore.load(tmp_path)) == 3


def test_a_save_over_a_legacy_store_removes_its_index_pt(tmp_path):
    test_a_store_saved_with_the_legacy_index_name_loads(tmp_path)
    FaissStore.load(tmp_path).save(tmp_path)
    assert not (tmp_path / "index.pt").exists() and len(FaissStore.load(tmp_path)) == 3


def _edited(edit, **kw):
    store = FaissStore(4, 2, capacity=4, lanes=2, **kw)
    store.add(np.eye(4)[[0, 1, 2]], np.arange(6.0).reshape(3, 2), [0, 0, 1])
    d = store.state_dict()
    edit(d)
    return FaissStore(4, 2, capacity=4, lanes=2, **kw), d


def _meta(column, value):
    def edit(d):
        d["meta"][0, column] = value
    return edit


@pytest.mark.parametrize("edit, kw, problem", [
    # another row's id: a search for entry 0's key returned id 1, and get() entry 1's values
    (lambda d: d["row_id"].__setitem__(0, d["row_id"][1]), {}, "entry ids that this store did not issue"),
    (lambda d: d["row_id"].__setitem__(1, 2 ** 62), {}, "entry ids that this store did not issue"),  # never found
    # a negative generation: add() issued negative ids, which the cache refused with a traceback
    (lambda d: d["gen"].fill_(-3), {}, "generation counts out of [0, 4611686018427387904]"),
    # NaN importances were never evicted under eviction=importance
    (lambda d: d["importance"].fill_(float("nan")), {"eviction": "importance"}, "NaN or inf importances"),
    (lambda d: d["keys"].mul_(100), {}, "keys longer than unit vectors"),  # scores of ~44 in a cosine store
    (_meta(0, 9), {"scope": "shared"}, "entries of lanes outside [0, 2)"),  # survived clear(lanes=[0])
    # fifo / lru order and replacement's newest-first read seq and stamp: an edited one evicted the wrong entry
    (lambda d: d["seq"].__setitem__(0, d["seq"][1]), {}, "insertion numbers (seq) that are negative, repeated"),
    (lambda d: d["seq"].__setitem__(0, -1), {}, "insertion numbers (seq) that are negative"),
    (lambda d: d["seq"].__setitem__(4, d["clock"]), {}, "insertion numbers (seq) that are negative, repeated or not "
                                                        "below its clock (3)"),  # a later add reissued it
    (lambda d: d["stamp"].__setitem__(1, d["clock"] + 5), {"eviction": "lru"}, "last-use stamps before their "
                                                                                "entry's insertion or not below"),
    (lambda d: d["stamp"].__setitem__(1, d["seq"][1] - 1), {"eviction": "lru"}, "last-use stamps before their"),
    (_meta(0, 1), {}, "entries of lanes outside [0, 2) or outside their lane's partition"),
])
def test_a_state_whose_rows_add_would_never_make_is_refused(edit, kw, problem):
    fresh, d = _edited(edit, **kw)
    with pytest.raises(ValueError, match=re.escape(f"FaissStore.load_state_dict: the saved state holds {problem}")):
        fresh.load_state_dict(d)
    assert len(fresh) == 0  # nothing loaded


@pytest.mark.parametrize("eviction", ["fifo", "lru"])
def test_a_store_used_past_its_capacity_loads_back_with_its_eviction_order(eviction):
    """What searches and evictions leave in seq and stamp passes the load checks, and the loaded store goes on
    evicting as the saved one does."""
    rng = np.random.default_rng(0)
    stores = [FaissStore(4, 2, capacity=4, lanes=2, eviction=eviction) for _ in range(2)]
    saved, loaded = stores
    for _ in range(5):
        saved.add(rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), [0, 1, 0])
        saved.search(rng.normal(size=(2, 1, 4)), 2)  # one query per lane: its hits' stamps move on
    loaded.load_state_dict(saved.state_dict())
    keys = rng.normal(size=(2, 4))
    (ids, evicted), (ids_loaded, evicted_loaded) = (s.add(keys, np.ones((2, 2)), [0, 1]) for s in stores)
    assert len(evicted) == 2 and np.array_equal(evicted, evicted_loaded) and np.array_equal(ids, ids_loaded)


def test_an_ip_store_keeps_its_keys_as_given_and_loads():
    fresh, d = _edited(lambda d: None, metric="ip")
    d["keys"].mul_(100)  # no norm to keep
    fresh.load_state_dict(d)
    assert len(fresh) == 3


@pytest.mark.parametrize("count", ["clock", "adds"])
def test_a_counter_past_int64_is_refused(count):
    fresh, d = _edited(lambda d: d.__setitem__(count, 2 ** 70))
    with pytest.raises(ValueError, match=f"{count} is {2 ** 70}, expected an int in"):
        fresh.load_state_dict(d)


def test_a_saved_capacity_past_this_machine_is_one_line(tmp_path):
    """capacity=10**12 in a store.pt was numpy's MemoryError ("Unable to allocate 58.2 TiB"), naming no file."""
    FaissStore(4, 2, capacity=4).save(tmp_path)
    body = torch.load(tmp_path / "store.pt", weights_only=True)
    body["config"]["capacity"] = 10**15  # past any address space, whatever the kernel's overcommit policy
    torch.save(body, tmp_path / "store.pt")
    with pytest.raises(ValueError, match=r"store\.pt: its settings ask for more memory than is free \(.*\); it is "
                                         r"damaged or was saved on a bigger machine$"):
        FaissStore.load(tmp_path)


def test_a_cosine_store_with_a_key_below_the_norm_cap_loads_back():
    """`add` scales a key under 1e-12 by the 1e12 cap of its inverse norm, short of unit length: a saved store holding
    one (|k| = 5e-13 -> 0.5) was refused as keys that are not unit vectors."""
    store = FaissStore(4, 2, capacity=8)
    store.add(np.array([[5e-13, 0, 0, 0], [1, 1, 0, 0]], np.float32), np.ones((2, 2)), [0, 0])
    back = FaissStore(4, 2, capacity=8)
    back.load_state_dict(store.state_dict())
    assert len(back) == 2
