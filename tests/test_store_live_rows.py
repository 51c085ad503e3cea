"""A FaissStore's saved state holds its live entries, not its capacity: the per-row arrays at the live rows only,
gen and seq of every row. Loading it gives back the state that was saved (partial fill, full, after evictions,
removals and clears) and a store that goes on as the saved one; a state of the format before (every row saved,
FaissStore/3: checkpoints and memory folders written until then) loads to the same store, checked as strictly."""

import numpy as np
import pytest
import torch

from memory.store import CodedKeys, FaissStore
from memory.store_io import LEGACY_FORMAT
from tests.test_memory_store import clustered
from tests.test_memory_store_coded import CAP, DC, LANES, V, coded_keys, filled
from tests.test_resume import assert_same

PER_ROW = ("keys", "values", "meta", "row_id", "stamp", "importance")


def every_row_state(store: FaissStore) -> dict:
    """The state FaissStore/3 saved for `store`: every row of every array."""
    d = store.state_dict()
    del d["rows"]
    d.pop("key_codes", None)  # (coded stores: their keys whole)
    return {**d, "format": LEGACY_FORMAT, **{n: torch.from_numpy(getattr(store, f"_{n}").copy()) for n in PER_ROW}}


def used_store(eviction="fifo", scope="lane", capacity=40, adds=3, seed=0) -> tuple[FaissStore, np.random.Generator]:
    """A store after `adds` rounds of 25 adds per lane, searches (lru stamps, importances move) and removals."""
    rng = np.random.default_rng(seed)
    store = FaissStore(8, 3, capacity=capacity, lanes=2, scope=scope, eviction=eviction)
    for _ in range(adds):
        lanes = np.repeat([0, 1], 25 if scope == "lane" else 12)
        ids = store.add(clustered(rng, len(lanes), 8, clusters=5), rng.normal(size=(len(lanes), 3)), lanes,
                        meta={"task": rng.integers(0, 9, len(lanes))}, importance=rng.random(len(lanes)))[0]
        store.search(clustered(rng, 6, 8, clusters=5).reshape(2, 3, 8), 4)
        store.remove(rng.permutation(ids)[:7])  # emptied rows, in an order other than their rows'
    return store, rng


def goes_on_alike(a: FaissStore, b: FaissStore, rng) -> None:
    """Adds (into emptied rows, then by eviction) and searches give the same ids, evictions and hits."""
    for n in (5, 18):
        keys, lanes = clustered(rng, 2 * n, 8, clusters=5), np.repeat([0, 1], n)
        (ids, gone), (ids_b, gone_b) = (s.add(keys, np.ones((2 * n, 3)), lanes) for s in (a, b))
        np.testing.assert_array_equal(ids, ids_b)
        np.testing.assert_array_equal(gone, gone_b)
        q = clustered(rng, 8, 8, clusters=5).reshape(2, 4, 8)
        x, y = a.search(q, 5, with_values=True), b.search(q, 5, with_values=True)
        for field in ("scores", "ids", "values"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        assert x.meta.keys() == y.meta.keys() and all(np.array_equal(x.meta[f], y.meta[f]) for f in x.meta)
    assert_same(a.state_dict(), b.state_dict(), "store")


def test_the_saved_state_grows_with_the_entries_not_the_capacity():
    small, _ = used_store(capacity=80, adds=1)
    big, _ = used_store(capacity=8000, adds=1)  # the same entries in 100x the rows
    for store in (small, big):
        d = store.state_dict()
        n = len(store)
        assert n == 2 * 25 - 7  # 7 of the 50 removed
        assert d["keys"].shape == (n, 8) and d["values"].shape == (n, 3) and d["meta"].shape[0] == n
        assert all(d[name].shape[0] == n for name in PER_ROW) and d["rows"].shape == (n,)
        assert d["gen"].shape == d["seq"].shape == (store.rows,)  # 8 bytes a row each: ids, reuse order
    same = ("keys", "values", "meta", "stamp", "importance", "clock", "adds")  # ids and rows: (gen - 1) R + row
    assert_same({k: small.state_dict()[k] for k in same}, {k: big.state_dict()[k] for k in same})


@pytest.mark.parametrize("eviction", ["fifo", "lru", "importance"])
@pytest.mark.parametrize("scope", ["lane", "shared"])
@pytest.mark.parametrize("adds", [1, 2, 3])  # partial fill; full; full after evictions, replacing removed rows
def test_a_loaded_state_is_the_saved_one_and_goes_on_as_it(eviction, scope, adds):
    store, rng = used_store(eviction, scope, capacity=40 if scope == "lane" else 48, adds=adds)
    assert (store._fill == store.capacity).all() == (adds > 1)
    assert (store._row_id[: store._fill[0]] < 0).any()  # emptied rows among the used ones
    loaded = FaissStore(8, 3, capacity=store.capacity, lanes=2, scope=scope, eviction=eviction)
    loaded.load_state_dict(store.state_dict())
    assert_same(store.state_dict(), loaded.state_dict(), "store")
    goes_on_alike(store, loaded, rng)


def test_emptied_rows_are_reused_in_the_saved_order():
    """Emptied rows are taken oldest entry first (their seq), not in row order: saved at live rows only, a load lost
    the order, and later adds were given other ids than the unsaved store gives."""
    store = FaissStore(4, 1, capacity=4)
    store.add(np.eye(4), np.zeros((4, 1)), [0] * 4)  # rows 0-3, seq 0-3
    ids = store.add(np.eye(4)[:2], np.zeros((2, 1)), [0] * 2)[0]  # fifo: into rows 0, 1 (seq 4, 5)
    store.remove([ids[0], 2])  # rows 0 (seq 4) and 2 (seq 2) emptied: row 2's entry is the older
    loaded = FaissStore(4, 1, capacity=4)
    loaded.load_state_dict(store.state_dict())
    got = [s.add(np.eye(4)[:1], np.zeros((1, 1)), [0])[0] % 4 for s in (store, loaded)]
    assert got == [2, 2]
    assert_same(store.state_dict(), loaded.state_dict(), "store")


def test_a_cleared_store_keeps_its_ids_unique_after_a_load(tmp_path):
    store, rng = used_store(adds=2)
    issued = store._row_id[store._row_id >= 0].copy()
    store.clear()  # fill back to 0; every row's gen stays
    store.save(tmp_path / "s")
    loaded = FaissStore.load(tmp_path / "s")
    assert loaded.state_dict()["keys"].shape == (0, 8)
    goes_on_alike(store, loaded, rng)
    assert not np.isin(loaded._row_id[loaded._row_id >= 0], issued).any()


@pytest.mark.parametrize("adds", [1, 3])
def test_a_state_of_the_format_before_loads_to_the_same_store(tmp_path, adds):
    store, rng = used_store("lru", adds=adds)
    from_old = FaissStore(8, 3, capacity=40, lanes=2, eviction="lru")
    from_old.load_state_dict(every_row_state(store))
    assert_same(store.state_dict(), from_old.state_dict(), "store")
    # a memory folder of then: store.pt and its index file, both FaissStore/3
    store.save(tmp_path / "s")
    index = next((tmp_path / "s").glob("index-*.pt"))
    old, part = every_row_state(store), torch.load(index, weights_only=True)
    torch.save({**part, "format": LEGACY_FORMAT + ":index", "keys": old.pop("keys"), "ann": old.pop("ann")}, index)
    saved = torch.load(tmp_path / "s" / "store.pt", weights_only=True)
    torch.save({**old, "token": saved["token"], "index_file": index.name}, tmp_path / "s" / "store.pt")
    goes_on_alike(store, FaissStore.load(tmp_path / "s"), rng)


@pytest.mark.parametrize("edit, problem", [
    # an empty row's id other than -1: /3 refused it, and so does its load now (the id is no issued one)
    (lambda d, dead: d["row_id"].__setitem__(dead, -5), "entry ids that this store did not issue"),
    (lambda d, dead: d["importance"].__setitem__(dead, float("nan")), "NaN or inf importances"),
])
def test_a_damaged_state_of_the_format_before_is_refused_as_before(edit, problem):
    store, _ = used_store(adds=2)
    d = every_row_state(store)
    edit(d, int(np.flatnonzero(store._row_id < 0)[0]))
    fresh = FaissStore(8, 3, capacity=40, lanes=2)
    with pytest.raises(ValueError, match=f"FaissStore.load_state_dict: the saved state holds {problem}"):
        fresh.load_state_dict(d)
    assert len(fresh) == 0


@pytest.mark.parametrize("edit", [
    lambda d: d.__setitem__("rows", d["rows"].flip(0)),  # another entry's data at each row
    lambda d: d.__setitem__("rows", d["rows"] + 1000),  # past the store
    lambda d: d.__setitem__("rows", d["rows"].float()),
    lambda d: d.pop("rows"),
    lambda d: d.__setitem__("keys", d["keys"][1:]),  # a row's keys lost
])
def test_saved_rows_that_do_not_fit_the_store_are_refused(edit):
    store, _ = used_store(adds=2)
    d = store.state_dict()
    edit(d)
    fresh = FaissStore(8, 3, capacity=40, lanes=2)
    with pytest.raises(ValueError, match="FaissStore.load_state_dict: .*(rows|keys is)") as err:
        fresh.load_state_dict(d)
    assert "\n" not in str(err.value) and len(fresh) == 0


def test_coded_keys_are_saved_without_their_codes_and_load_bit_for_bit(tmp_path):
    """With coded keys (MemNet's token codes) the blocks that are codes of the entries' metadata are not saved:
    the code table and the metadata write them back, the same bits, also into a store made without the codes."""
    store = filled(16)
    d, rows = store.state_dict(), np.flatnonzero(store._row_id >= 0)
    assert d["keys"].shape == (len(rows), 16) and tuple(d["key_codes"]["fields"]) == ("token", "prev")
    again = FaissStore(2 * DC + 16, 4, CAP, lanes=LANES, metric="ip", coded=store.coded)
    again.load_state_dict(d)
    assert_same(store.state_dict(), again.state_dict(), "store")
    assert store._keys[rows].tobytes() == again._keys[rows].tobytes()
    store.save(tmp_path / "s")
    plain = FaissStore.load(tmp_path / "s")  # no codes given: whole keys
    assert plain.state_dict()["keys"].shape == (len(rows), 2 * DC + 16)
    assert store._keys[rows].tobytes() == plain._keys[rows].tobytes()
    q = np.random.default_rng(2).standard_normal((LANES, 4, 2 * DC + 16)).astype(np.float32)
    np.testing.assert_array_equal(store.search(q, 5).ids, plain.search(q, 5).ids)
    other = FaissStore(2 * DC + 16, 4, CAP, lanes=LANES, metric="ip",
                       coded=CodedKeys(store.coded.codes + 1, ("token", "prev")))
    with pytest.raises(ValueError, match="must be the code of meta"):  # as whole keys under other codes were
        other.load_state_dict(d)


def test_coded_blocks_that_are_not_their_codes_bit_for_bit_are_saved_whole():
    """`add` takes blocks within CODE_TOLERANCE of their codes (bfloat16 autocast): those keys are kept as given."""
    rng = np.random.default_rng(3)
    keys, meta, codes = coded_keys(rng, 30, 4)
    keys[5, 0] *= 1 + 2 ** -10  # within the tolerance
    store = FaissStore(2 * DC + 4, 2, CAP, metric="ip", coded=CodedKeys(codes, ("token", "prev")))
    store.add(keys, np.zeros((30, 2)), [0] * 30, meta=meta)
    d = store.state_dict()
    assert d["keys"].shape == (30, 2 * DC + 4) and "key_codes" not in d
    loaded = FaissStore(2 * DC + 4, 2, CAP, metric="ip", coded=CodedKeys(codes, ("token", "prev")))
    loaded.load_state_dict(d)
    assert loaded._keys[:30].tobytes() == keys.tobytes()


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d["key_codes"]["codes"].add_(1e-3), "the saved key codes are not the codes its keys were saved"),
    (lambda d: d["key_codes"].__setitem__("fields", ["token", "lane"]), "the saved key codes are not the codes"),
    (lambda d: d["key_codes"].pop("codes"), "the saved key codes are not the codes"),
    (lambda d: d["meta"][:, 6].fill_(V), f"the saved state holds token ids past its {V} key codes"),
    (lambda d: d.__setitem__("keys", d["keys"][:, 1:]), r"keys is \(\d+, 15\) torch.float32, expected \(\d+, 16\)"),
])
def test_a_state_whose_key_codes_do_not_fit_is_refused(edit, problem):
    d = filled(16).state_dict()
    edit(d)
    fresh = FaissStore(2 * DC + 16, 4, CAP, lanes=LANES, metric="ip")
    with pytest.raises(ValueError, match=f"FaissStore.load_state_dict: {problem}") as err:
        fresh.load_state_dict(d)
    assert "\n" not in str(err.value) and len(fresh) == 0
