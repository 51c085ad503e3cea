"""Coded keys: a store told that its keys' leading blocks are codes named by metadata ranks exactly as a full scan."""

import numpy as np
import pytest
import torch

from memory.store import CodedKeys, FaissStore

V, DC, LANES, CAP = 20, 8, 3, 64


def coded_keys(rng, n: int, rest: int, fields=("token", "prev")) -> tuple[np.ndarray, dict, torch.Tensor]:
    """n keys whose blocks are codes[token], codes[prev] (zeros where prev = -1), then `rest` free columns."""
    codes = torch.from_numpy(rng.standard_normal((V, DC)).astype(np.float32))
    meta = {"token": rng.integers(0, V, n), "prev": np.where(rng.random(n) < 0.2, -1, rng.integers(0, V, n))}
    blocks = [np.where((meta[f] >= 0)[:, None], codes.numpy()[np.maximum(meta[f], 0)], 0.0) for f in fields]
    keys = np.concatenate(blocks + [rng.standard_normal((n, rest))], axis=1).astype(np.float32)
    return keys, meta, codes


def filled(rest: int, precision: str = "fp32", scope: str = "lane", coded: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys, meta, codes = coded_keys(rng, 150, rest)
    store = FaissStore(2 * DC + rest, 4, CAP, lanes=LANES, scope=scope, metric="ip", precision=precision,
                       coded=CodedKeys(codes, ("token", "prev")) if coded else None)
    lanes = rng.integers(0, LANES, 150)
    for part in np.array_split(np.arange(150), 5):  # several adds: fifo evictions once a lane holds CAP
        ids, _ = store.add(keys[part], rng.standard_normal((len(part), 4)), lanes[part],
                           meta={k: v[part] for k, v in meta.items()})
    store.remove(ids[::3])  # holes
    return store


@pytest.mark.parametrize("rest", [0, 16])
@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_coded_search_returns_what_a_full_scan_returns(rest, scope):
    plain, coded = filled(rest, scope=scope, coded=False), filled(rest, scope=scope)
    q = np.random.default_rng(1).standard_normal((LANES, 5, 2 * DC + rest)).astype(np.float32)
    want, got = plain.search(q, 6), coded.search(q, 6)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-4)
    if rest:  # with only codes, equal-scoring entries (same token and prev) may come in another order
        assert np.array_equal(got.ids, want.ids)
    copies = (coded._scan.nbytes if rest else 0) + coded._code_rows.nbytes  # what coded search reads instead
    assert len(coded) == len(plain) and coded.nbytes == plain.nbytes + copies


def test_coded_search_is_float32_exact_whatever_the_precision_when_the_rest_is_narrow():
    """A coded store whose uncoded rest is at most half the key scans it in float32 even with precision="bf16": its
    results are a float32 scan's. A wider rest follows the precision."""
    assert filled(48, precision="bf16")._scan.dtype == torch.bfloat16  # explicit bf16, AMX or not ("auto" asks)
    exact, coded = filled(16, coded=False), filled(16, precision="bf16")
    assert coded._scan.dtype == torch.float32 and coded._scan.shape[1] == 16
    q = np.random.default_rng(2).standard_normal((LANES, 8, 2 * DC + 16)).astype(np.float32)
    want, got = exact.search(q, 8), coded.search(q, 8)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-4)
    assert np.array_equal(got.ids, want.ids)


def test_coded_store_survives_a_state_dict_round_trip():
    store = filled(16)
    q = np.random.default_rng(3).standard_normal((LANES, 4, 2 * DC + 16)).astype(np.float32)
    before = store.search(q, 5)
    again = FaissStore(2 * DC + 16, 4, CAP, lanes=LANES, metric="ip", coded=store.coded)
    again.load_state_dict(store.state_dict())
    after = again.search(q, 5)
    assert np.array_equal(after.ids, before.ids) and np.allclose(after.scores, before.scores)


def test_a_key_that_is_not_its_code_is_refused():
    rng = np.random.default_rng(4)
    keys, meta, codes = coded_keys(rng, 4, 8)
    store = FaissStore(2 * DC + 8, 4, CAP, lanes=1, metric="ip", coded=CodedKeys(codes, ("token", "prev")))
    keys[2, DC + 1] += 0.5  # block 1 of entry 2 no longer the code of its prev
    with pytest.raises(ValueError, match=r"key columns 8:16 must be the code of meta\['prev'\]"):
        store.add(keys, np.zeros((4, 4)), np.zeros(4, dtype=int), meta=meta)
    assert len(store) == 0


@pytest.mark.parametrize("kw", [dict(metric="cosine"), dict(index="ivf"), dict(dim=DC)])
def test_coded_keys_need_inner_products_exact_search_and_room(kw):
    args = {"dim": 2 * DC, "value_dim": 4, "capacity": CAP, "metric": "ip", **kw}
    with pytest.raises(ValueError, match="coded keys need metric='ip', index='flat'"):
        FaissStore(coded=CodedKeys(torch.zeros(V, DC), ("token", "prev")), **args)


@pytest.mark.parametrize("mem,coded", [
    (dict(key_source="token"), ("token", "prev")),
    (dict(key_source="token", context_decay=0.9), ("token", "prev")),
    (dict(key_source="token", key_lags="0:0"), ("token",)),
    (dict(key_source="token", key_lags="3:0+4:1+5:2"), None),  # NeedleRecall's: the rest is 4 of 6 blocks
    (dict(key_source="token", window=1), None),  # prev unknown at a call's first position
    (dict(key_source="hidden"), None),
])
def test_memnet_codes_its_keys_where_that_is_exact_and_reads_the_same(mem, coded):
    """MemNet stores coded keys with token codes (checked at every add) and reads exactly what a store scanning
    whole keys gives it."""
    from agents.memnet import MemNet
    from tests.test_memnet import V as VOCAB
    from tests.test_memnet import model_cfg

    torch.manual_seed(0)
    model = MemNet(model_cfg(store_precision="fp32", store_metric="ip", **mem))
    plain = MemNet(model_cfg(store_precision="fp32", store_metric="ip", **mem))
    plain.load_state_dict(model.state_dict())
    plain._coded_keys = lambda: None
    s1, s2 = model.initial_state(2), plain.initial_state(2)
    with torch.no_grad():
        for _ in range(4):
            tokens = torch.randint(0, VOCAB, (2, 12))
            writes = torch.rand(2, 12) < 0.8
            a, s1, _ = model(tokens, s1, writes)
            b, s2, _ = plain(tokens, s2, writes)
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (model.store.coded.fields if model.store.coded is not None else None) == coded
    assert plain.store.coded is None and len(model.store) == len(plain.store) > 0
