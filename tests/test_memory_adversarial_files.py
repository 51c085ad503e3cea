"""Memory files as a user of the library meets them (README "Memory core", "Long-term memory"): wrong objects
given to the savers, paths that are folders, files given to the wrong loader, loads that fail half-way, and a
coded store given keys that are not its codes. Each case was found by adversarial testing and failed before."""

import re

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.internal import LM2Memory, load_internal_state, save_internal_state
from memory.persist import atomic_torch_save
from memory.slots import MultiHeadMemoryBank, load_slot_state, save_slot_state
from memory.store import CodedKeys, FaissStore

CFG = MemoryConfig(dim=8, slots=4, read_heads=2, top_k=2, internal_slots=3, attn_heads=2)


def trained_slot_state(bank, grad=False):
    h = torch.randn(2, 3, CFG.dim, requires_grad=grad)
    return bank(h, bank.initial_state(2), torch.ones(2, 3, dtype=torch.bool))[1]


# ---------------------------------------------------------------------- slot and internal states
@pytest.mark.parametrize("wrong", ["tuple", "tensor", "dict"])
def test_save_slot_state_refuses_what_is_not_a_slot_state_in_one_line(tmp_path, wrong):
    """Was AttributeError: 'tuple' object has no attribute '_asdict'."""
    state = trained_slot_state(MultiHeadMemoryBank(CFG))
    obj = {"tuple": tuple(state), "tensor": state.memory, "dict": state._asdict()}[wrong]
    with pytest.raises(TypeError, match=r"^save_slot_state: state must be a SlotState of tensors .*got "):
        save_slot_state(tmp_path / "s.pt", obj)
    assert list(tmp_path.iterdir()) == []


def test_save_slot_state_refuses_a_state_no_bank_could_load_before_writing(tmp_path):
    """A state with a float `written` or (B, N) tensors of another B was written, and only its load failed."""
    state = trained_slot_state(MultiHeadMemoryBank(CFG))
    (tmp_path / "s.pt").write_bytes(b"old")
    for bad in (state._replace(written=state.written.float()), state._replace(usage=state.usage[:1])):
        with pytest.raises(ValueError, match=r"^save_slot_state: state\.(written|usage) is .*expected"):
            save_slot_state(tmp_path / "s.pt", bad)
    assert (tmp_path / "s.pt").read_bytes() == b"old"  # nothing was replaced


def test_a_slot_state_saved_mid_training_loads_detached_and_equal(tmp_path):
    """A state that came out of a forward with grad was saved with requires_grad and read back as a leaf that
    required grad (the internal state was detached): a later bank call then built a graph into the loaded state."""
    bank = MultiHeadMemoryBank(CFG)
    state = trained_slot_state(bank, grad=True)
    assert state.memory.requires_grad
    save_slot_state(tmp_path / "s.pt", state)
    loaded = load_slot_state(tmp_path / "s.pt", bank)
    assert not any(t.requires_grad for t in loaded)
    assert all(torch.equal(a, b.detach()) for a, b in zip(loaded, state, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_a_damaged_slot_file_with_a_float_written_mask_is_refused(tmp_path):
    bank = MultiHeadMemoryBank(CFG)
    state = bank.initial_state(2)
    atomic_torch_save({"format": "memstream.slot_state.v1", **state._replace(written=state.usage)._asdict()},
                      tmp_path / "s.pt")
    with pytest.raises(ValueError, match=r"s\.pt' is damaged: written is torch\.float32"):
        load_slot_state(tmp_path / "s.pt", bank)


@pytest.mark.parametrize("field, edit, line", [
    # a float64 state loaded, then failed inside the bank's first call (expected scalar type Double but found Float)
    ("memory", lambda t: t.double(), "its memory is torch.float64, the bank computes in torch.float32"),
    ("usage", lambda t: t.double(), "its usage is torch.float64, the bank computes in torch.float32"),
    ("memory", lambda t: torch.full_like(t, float("nan")), "its memory holds NaN or inf (damaged)"),  # loaded silently
    ("age", lambda t: torch.full_like(t, float("inf")), "its age holds NaN or inf (damaged)"),
])
def test_a_slot_file_of_another_dtype_or_with_nan_is_one_line(tmp_path, field, edit, line):
    bank = MultiHeadMemoryBank(CFG)
    state = bank.initial_state(2)
    save_slot_state(tmp_path / "s.pt", state._replace(**{field: edit(getattr(state, field))}))
    with pytest.raises(ValueError, match=re.escape(f"s.pt': {line}")):
        load_slot_state(tmp_path / "s.pt", bank)


@pytest.mark.parametrize("edit, line", [
    (lambda t: t.double(), "the state is torch.float64, this memory computes in torch.float32"),
    (lambda t: t.half(), "the state is torch.float16, this memory computes in torch.float32"),
    (lambda t: torch.full_like(t, float("nan")), "is damaged: its state holds NaN or inf"),
])
def test_an_internal_state_file_of_another_dtype_or_with_nan_is_one_line(tmp_path, edit, line):
    memory = LM2Memory(MemoryConfig(dim=16, internal="lm2", internal_slots=4))
    with torch.no_grad():
        save_internal_state(tmp_path / "i.pt", edit(memory.initial_state(2)))
    with pytest.raises(ValueError, match=re.escape(line)):
        load_internal_state(tmp_path / "i.pt", memory)


def test_state_loaders_name_the_function_that_writes_their_files(tmp_path):
    """The message said "point slot state.load at a folder (or file) that slot state.save wrote": no such API."""
    bank, mem = MultiHeadMemoryBank(CFG), LM2Memory(CFG)
    with pytest.raises(FileNotFoundError, match=r"^slot state: no file at .*; pass a file that save_slot_state "
                                                r"wrote$"):
        load_slot_state(tmp_path / "missing.pt", bank)
    with pytest.raises(FileNotFoundError, match=r"^slot state: .* is a folder, not a file; pass a file that "
                                                r"save_slot_state wrote$"):
        load_slot_state(tmp_path, bank)
    with pytest.raises(FileNotFoundError, match=r"; pass a file that save_internal_state wrote$"):
        load_internal_state(tmp_path / "missing.pt", mem)


@pytest.mark.parametrize("wrong", ["tuple", "2d", "int"])
def test_save_internal_state_refuses_what_it_could_not_load(tmp_path, wrong):
    """A tuple raised AttributeError ('detach'); a (S, D) state without its lane dimension was written and then
    refused by load_internal_state: the memory it held was lost."""
    mem = LM2Memory(CFG)
    state = mem.initial_state(2)
    obj = {"tuple": (state,), "2d": state[0], "int": state.long()}[wrong]
    with pytest.raises((TypeError, ValueError), match=r"^save_internal_state: state (must be|is) "):
        save_internal_state(tmp_path / "i.pt", obj)
    assert list(tmp_path.iterdir()) == []
    save_internal_state(tmp_path / "i.pt", state)
    assert torch.equal(load_internal_state(tmp_path / "i.pt", mem), state)


# ---------------------------------------------------------------------- paths that cannot be files
def test_saving_onto_a_folder_says_so_not_free_space(tmp_path):
    """Was "cannot write X (Is a directory; 75 GiB free there) ...: free space (or fix the folder's permissions)"."""
    cache = TieredKVCache(2, 4, 2, 0, 0)
    with pytest.raises(OSError, match=r"^cannot write .* is a folder; pass a file path \(e\.g\. .*state\.pt\); "
                                      r"nothing was written there$"):
        cache.save(tmp_path)
    (tmp_path / "plain").write_text("x")
    store = FaissStore(4, 2, 8)
    with pytest.raises(OSError, match=r"plain is a file, not a folder; pass a path whose parents are folders"):
        store.save(tmp_path / "plain")
    assert (tmp_path / "plain").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # no temp file left


def test_faiss_store_load_of_its_store_file_points_at_the_folder(tmp_path):
    store = FaissStore(4, 2, 8)
    store.add(np.ones((1, 4)), np.ones((1, 2)), [0])
    store.save(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match=r"store\.pt is a file, and FaissStore\.save writes a folder; point "
                                                r"FaissStore\.load at the folder$"):
        FaissStore.load(tmp_path / "s" / "store.pt")
    assert len(FaissStore.load(tmp_path / "s")) == 1


# ---------------------------------------------------------------------- TieredKVCache state
def filled_cache(tmp_path, first_id, n, seed=0):
    rng = np.random.default_rng(seed)
    cache = TieredKVCache(2, 3, 2, 2, 2, path=tmp_path / "cold")
    ids = np.arange(first_id, first_id + n)
    cache.put(ids, rng.standard_normal((n, 2, 3)), rng.standard_normal((n, 2, 3)))
    return cache, ids


def snapshot(cache, ids):
    """What the cache answers: reads, tiers, stats, and which ids a put of 3 more entries evicts (the books')."""
    k, v, mask = cache.get_batch(ids)
    tiers, stats = cache.tier_of(ids).tolist(), cache.stats()
    evicted = cache.put([900, 901, 902], np.ones((3, 2, 3)), np.ones((3, 2, 3))).tolist()
    return k.numpy().copy(), v.numpy().copy(), mask.numpy().copy(), tiers, stats, evicted, cache.tier_of(ids).tolist()


@pytest.mark.parametrize("damage", ["cold", "book", "ids", "slot", "data", "twice"])
def test_a_cache_load_that_fails_leaves_the_cache_as_it_was(tmp_path, damage):
    """load_state_dict loaded the tier books before it checked the data and never checked the id map: a failed
    load left books describing the file's 6 entries beside this cache's id map (stats said cold=2 where the map
    held none), and a map cut short loaded silently (len 3, 6 entries in the tiers)."""
    src, _ = filled_cache(tmp_path, 0, 6)
    d = src.state_dict()
    if damage == "cold":
        d["data"]["cold"] = d["data"]["cold"][:1]
    elif damage == "book":
        d["books"][2]["seq"] = d["books"][2]["seq"][:1]
    elif damage == "ids":
        d["ids"], d["tier"], d["slot"] = d["ids"][:3], d["tier"][:3], d["slot"][:3]
    elif damage == "slot":
        d["slot"] = d["slot"].flip(0)
    elif damage == "twice":  # id 1 renamed to id 0 in the map and the books: one id in two slots (was unchecked)
        d["ids"] = d["ids"].clone()
        d["ids"][1] = d["ids"][0]
        for book in d["books"]:
            book["ids"] = book["ids"].clone()
            book["ids"][book["ids"] == 1] = int(d["ids"][0])
    else:
        del d["data"]["warm_sk"]
    dst, ids = filled_cache(tmp_path, 100, 4, seed=1)  # hot and warm full, cold empty
    twin, _ = filled_cache(tmp_path, 100, 4, seed=1)
    with pytest.raises(ValueError, match=r"^TieredKVCache\.load_state_dict: "):
        dst.load_state_dict(d)
    got, want = snapshot(dst, ids), snapshot(twin, ids)
    for a, b in zip(got[:3], want[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[3:] == want[3:]
    dst.load_state_dict(src.state_dict())  # an intact state still loads, and answers as src does
    got, want = snapshot(dst, np.arange(6)), snapshot(src, np.arange(6))
    for a, b in zip(got[:3], want[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[3:] == want[3:]
    for c in (src, dst, twin):
        c.close()


def _fill(name, value):
    def edit(data):
        data[name] = torch.full_like(data[name], value)
    return edit


@pytest.mark.parametrize("edit, line", [
    (_fill("hot_v", float("nan")), "hot_v holds NaN or inf, which put() refuses"),  # read back as NaN, silently
    (_fill("cold", float("inf")), "cold holds NaN or inf, which put() refuses"),
    (_fill("warm_sv", -1.0), "warm_sv holds scales that are not finite and > 0"),  # flipped the values' signs
    (_fill("warm_sk", 0.0), "warm_sk holds scales that are not finite and > 0"),  # read the keys back as zeros
    (_fill("channel", float("nan")), "channels holds scales that are not finite and > 0"),
    # no NaN in the file, but the next calibration's sqrt made NaN channel scales for every key put after it
    (_fill("key_sq", -1.0), "key_sq (a sum of squares) holds values that are not finite and >= 0"),
    (lambda data: data.update(calibrated_at=data["key_seen"] + 1), "is past key_seen="),
    # a slot's calibration row is a uint8: a 300th row's slots would read row 43's scales
    (lambda data: data.update(channel=data["channel"][:1].expand(300, -1, -1).clone(),
                              warm_cal=torch.zeros_like(data["warm_cal"])), "300 channel rows, more than a uint8"),
])
def test_a_cache_state_with_values_put_never_makes_is_refused_and_changes_nothing(tmp_path, edit, line):
    src, _ = filled_cache(tmp_path, 0, 6)
    d = src.state_dict()
    edit(d["data"])
    dst, ids = filled_cache(tmp_path, 100, 4, seed=1)
    before = dst.get_batch(ids)[1].numpy().copy()
    with pytest.raises(ValueError, match=r"^TieredKVCache\.load_state_dict: .*" + re.escape(line)):
        dst.load_state_dict(d)
    np.testing.assert_array_equal(dst.get_batch(ids)[1].numpy(), before)
    for c in (src, dst):
        c.close()


@pytest.mark.parametrize("damage", ["no_config", "no_books", "config_none"])
def test_a_cache_file_without_its_parts_is_one_line(tmp_path, damage):
    """Was KeyError: 'books' / 'config', or AttributeError on a None config."""
    src, _ = filled_cache(tmp_path, 0, 6)
    d = src.state_dict()
    if damage == "config_none":
        d["config"] = None
    else:
        del d[damage[3:]]
    atomic_torch_save(d, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"^TieredKVCache(\.load_state_dict)?: .*(lacks|damaged)"):
        TieredKVCache.load(tmp_path / "c.pt", cold_path=tmp_path / "cold2")
    with pytest.raises(ValueError, match=r"^TieredKVCache\.load_state_dict: the saved state lacks"):
        src.load_state_dict(d)
    src.close()


@pytest.mark.parametrize("edit, line", [
    (lambda cfg: cfg.update(newopt=1), "has settings this version does not know (newopt) in its 'config'"),
    (lambda cfg: cfg.update(path="/elsewhere"), "has settings this version does not know (path) in its 'config'"),
    (lambda cfg: cfg.pop("hot"), "lacks some of its settings ('config')")])
def test_a_cache_file_with_settings_this_version_does_not_take_names_them(tmp_path, edit, line):
    """A setting the cache has no keyword for was worded "lacks its settings", as FaissStore.load no longer does."""
    src, _ = filled_cache(tmp_path, 0, 6)
    d = src.state_dict()
    edit(d["config"])
    atomic_torch_save(d, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=re.escape(f"TieredKVCache: {tmp_path / 'c.pt'} {line}; it is damaged")):
        TieredKVCache.load(tmp_path / "c.pt", cold_path=tmp_path / "cold2")
    src.close()


# ---------------------------------------------------------------------- coded keys
V, DC, REST = 5, 4, 4


def coded_store(codes):
    return FaissStore(2 * DC + REST, 2, 16, metric="ip", coded=CodedKeys(codes, ("token", "prev")))


def test_a_coded_store_refuses_saved_keys_that_are_not_its_codes():
    """load_state_dict took any keys: a state saved under other codes (or by a plain store) then ranked by the
    lookups of this store's codes, silently unlike a full scan of the same keys (other ids, scores off by 0.7),
    and a token past the code table loaded and failed at the next search (a torch index error)."""
    rng = np.random.default_rng(0)
    codes = torch.tensor(rng.standard_normal((V, DC)), dtype=torch.float32)
    tok, prev = rng.integers(0, V, 10), rng.integers(0, V, 10)
    keys = np.concatenate([codes.numpy()[tok], codes.numpy()[prev], rng.standard_normal((10, REST))], 1)
    saved = coded_store(codes)
    saved.add(keys, np.zeros((10, 2)), np.zeros(10, int), meta={"token": tok, "prev": prev})
    state = saved.state_dict()
    others = torch.tensor(rng.standard_normal((V, DC)), dtype=torch.float32)
    for store in (coded_store(others), coded_store(codes[:2])):
        with pytest.raises(ValueError, match=r"^FaissStore\.load_state_dict: key columns 0:4 must be the code of "
                                             r"meta\['token'\] \(coded keys\); make this store with the codes"):
            store.load_state_dict(state)
        assert len(store) == 0  # nothing was loaded
    same = coded_store(codes.clone())
    same.load_state_dict(state)  # the same codes: loads, and searches as the store that saved it
    q = rng.standard_normal((1, 3, 2 * DC + REST)).astype(np.float32)
    plain = FaissStore(2 * DC + REST, 2, 16, metric="ip")
    plain.load_state_dict(state)
    np.testing.assert_array_equal(same.search(q, 4).ids, plain.search(q, 4).ids)
    np.testing.assert_allclose(same.search(q, 4).scores, plain.search(q, 4).scores, rtol=1e-5, atol=1e-5)
    # the state names the codes its keys were checked under: the same codes skip the second check; a state of whole
    # keys without that name (saved before it was recorded, or edited) gets the full check, which its keys pass or
    # fail as keys. (A state saved without its keys' coded blocks needs the name: its code table must match it.)
    assert state["codes"] == CodedKeys(codes.clone(), ("token", "prev")).digest() != coded_store(others).coded.digest()
    whole = plain.state_dict()
    assert whole["keys"].shape == (10, 2 * DC + REST) and "key_codes" not in whole
    for digest in (None, "edited"):
        coded_store(codes).load_state_dict({**whole, "codes": digest})
        with pytest.raises(ValueError, match=r"must be the code of meta\['token'\]"):
            coded_store(others).load_state_dict({**whole, "codes": digest})
        with pytest.raises(ValueError, match="the saved key codes are not the codes its keys were saved under"):
            coded_store(codes).load_state_dict({**state, "codes": digest})


def test_a_store_load_with_a_damaged_index_state_leaves_the_store_as_it_was():
    """The index states were checked (zip strict) only after every array had been copied: the failed load left
    the saved entries in the arrays beside this store's HNSW graphs."""
    rng = np.random.default_rng(0)

    def filled(n):
        store = FaissStore(4, 2, 16, lanes=2, index="hnsw", hnsw_min_entries=2, hnsw_neighbors=4)
        store.add(rng.standard_normal((n, 4)), rng.standard_normal((n, 2)), np.arange(n) % 2)
        return store

    src, dst = filled(8), filled(4)
    d = src.state_dict()
    d["ann"] = d["ann"][:1]
    before = dst.get(np.arange(-1, 64))
    with pytest.raises(ValueError, match=r"^FaissStore\.load_state_dict: the saved hnsw index state does not fit 2 "
                                         r"partitions; the state is damaged$"):
        dst.load_state_dict(d)
    after = dst.get(np.arange(-1, 64))
    assert len(dst) == 4
    np.testing.assert_array_equal(after[0], before[0])
    assert all(np.array_equal(after[1][k], before[1][k]) for k in before[1])


def test_a_cold_tier_path_that_is_a_file_is_one_line(tmp_path):
    """Was FileExistsError: [Errno 17] File exists (from mkdir), naming no fix."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"^TieredKVCache: path=.*f' is a file; the cold tier's file goes "
                                                 r"into a folder: pass a folder"):
        TieredKVCache(2, 3, 1, 1, 1, path=tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"
