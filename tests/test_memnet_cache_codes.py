"""MemNet's memory state without the cache's token-code keys (agents/memnet_cache_codes.py): the cold tier's heads
made of codes alone are left out where they can be remade bit for bit, written back at a load; a state saved whole
(before, or where they cannot be remade) still loads; a damaged compact state is refused in one line."""

import numpy as np
import pytest
import torch

from agents.memnet import MemNet
from tests.test_memnet import V, model_cfg
from tests.test_resume import assert_same

TOKEN = {"key_source": "token", "store_metric": "ip", "context_decay": 0.9, "cache_hot": 4, "cache_cold": 64}
WARM = {**TOKEN, "cache_warm": 16}  # every cold entry came through the int8 warm tier (its channel rows kept)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def filled(mem: dict, calls: int = 3, amp: bool = False) -> MemNet:
    model = MemNet(model_cfg(**mem)).eval()
    state = model.initial_state(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        for _ in range(calls):
            _, state, _ = model(torch.randint(0, V, (2, 10)), state, torch.rand(2, 10) < 0.8)
    return model


def loaded(model: MemNet, saved: dict) -> MemNet:
    other = MemNet(model.cfg).eval()
    other.load_state_dict(model.state_dict())
    other.load_memory_state_dict(saved)
    return other


def reads(model: MemNet) -> tuple:
    """Every cached id's tier and K/V as get_batch reads them (a read's bookkeeping is the same in both models)."""
    ids = model.cache._ids.copy()
    return (model.cache.tier_of(ids), *model.cache.get_batch(ids))


@pytest.mark.parametrize("mem, amp", [(WARM, False), ({**TOKEN, "cache_warm": 0}, False), (WARM, True)],
                         ids=["through-int8-warm", "no-warm-tier", "amp"])
def test_a_compact_memory_state_loads_to_the_same_cache_bit_for_bit(mem, amp):
    """(Under bfloat16 autocast the store's LayerNorm runs in float32, so the cached codes are not rounded.)"""
    model = filled(mem, amp=amp)
    stats = model.cache.stats()
    assert min(stats["hot"], stats["cold"]) > 0 and (stats["warm"] > 0) == (mem["cache_warm"] > 0)
    saved, whole = model.memory_state_dict(), model.memory_state_dict(compact=False)
    H, dk, d = model.cache.heads, model.cache.key_dim, model.cache.head_dim
    coded = 2 * model.cfg.dim  # the token and prev codes: heads 0 and 1 of 4 and 16 of head 2's 24 columns
    assert (coded // dk, H) == (2, 4) and coded % dk and "cache_codes" in saved and "cache_codes" not in whole
    n = stats["cold"]
    assert whole["cache"]["data"]["cold"].shape == (n, H, dk + d)
    assert saved["cache"]["data"]["cold"].shape == (n, H * (dk + d) - coded)
    ways = saved["cache_codes"]["how"]  # int8 channel row 0.. or 255: the codes as they are
    assert bool((ways == 255).all()) == (mem["cache_warm"] == 0) and not bool((ways == 254).any())  # none kept
    other = loaded(model, saved)
    assert_same(whole, other.memory_state_dict(compact=False), "memory")
    assert_same(saved, other.memory_state_dict(), "memory")
    for a, b in zip(reads(model), reads(other), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    tokens = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(tokens, model.initial_state(2))[0], other(tokens, other.initial_state(2))[0])


def test_a_key_of_codes_alone_loads_back_bit_for_bit():
    """Without the context block (LongDependency's and NeedleRecall's layout) every key column is a code: no head
    mixes codes and context (its load indexed a head past the last, an IndexError that refused the checkpoint)."""
    model = filled({**WARM, "context_decay": 0.0})
    assert model.cache.key_dim * model.cache.heads == 2 * model.cfg.dim  # the token and prev codes, all of it
    saved = model.memory_state_dict()
    H, d = model.cache.heads, model.cache.head_dim
    assert "cache_codes" in saved and saved["cache"]["data"]["cold"].shape[1] == H * d  # the values alone
    other = loaded(model, saved)
    assert_same(model.memory_state_dict(compact=False), other.memory_state_dict(compact=False), "memory")
    for a, b in zip(reads(model), reads(other), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_a_memory_state_saved_whole_still_loads():
    """Checkpoints from before hold the cold tier's keys whole (no cache_codes)."""
    model = filled(WARM)
    other = loaded(model, model.memory_state_dict(compact=False))
    assert_same(model.memory_state_dict(), other.memory_state_dict(), "memory")
    for a, b in zip(reads(model), reads(other), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_hidden_addresses_are_saved_whole():
    model = filled({**WARM, "key_source": "hidden"})
    assert model.cache.stats()["cold"] > 0
    saved = model.memory_state_dict()
    assert "cache_codes" not in saved
    assert_same(model.memory_state_dict(compact=False), saved, "memory")
    assert_same(saved, loaded(model, saved).memory_state_dict(), "memory")


@pytest.mark.parametrize("case", ["one-bit-off", "dropped-channel-rows"])
def test_entries_that_cannot_be_remade_bit_for_bit_keep_their_keys(case):
    """One cold entry's code one float32 step off (as a rounded code would be); a warm tier that emptied dropped the
    channel rows its earlier entries were quantised with (cache_warm=4): those entries' coded heads are saved as
    they are ("kept", how 254), the others left out, and the load gives every key back bit for bit."""
    model = filled(WARM if case == "one-bit-off" else {**TOKEN, "cache_warm": 4}, calls=4)
    books = model.cache._books[2]
    if case == "one-bit-off":
        cold, slot = model.cache._store.cold, np.flatnonzero(books.ids >= 0)[-1]
        cold[slot, 1, 5] = np.nextafter(cold[slot, 1, 5], np.float32(np.inf))
    saved = model.memory_state_dict()
    how, kept = saved["cache_codes"]["how"], saved["cache_codes"]["kept"]
    assert kept.shape == (int((how == 254).sum()), 2 * model.cfg.dim)
    if case == "one-bit-off":
        assert how.tolist().index(254) == len(how) - 1 and len(kept) == 1
    else:
        assert 0 < len(kept) < len(how)
    other = loaded(model, saved)
    assert_same(model.memory_state_dict(compact=False), other.memory_state_dict(compact=False), "memory")
    for a, b in zip(reads(model), reads(other), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def damage(saved: dict, how: str) -> dict:
    saved = {**saved, "cache": {**saved["cache"], "data": dict(saved["cache"]["data"])},
             "cache_codes": dict(saved["cache_codes"]), "store": dict(saved["store"])}
    if how == "codes":
        saved["cache_codes"]["codes"] = "0" * 64
    elif how == "row":
        saved["cache_codes"]["how"] = torch.full_like(saved["cache_codes"]["how"], 7)
    elif how == "scale":  # a mixed head's int8 scale: > 0, as quantize makes it
        saved["cache_codes"]["scale"] = -saved["cache_codes"]["scale"]
    elif how == "shape":
        saved["cache"]["data"]["cold"] = saved["cache"]["data"]["cold"][:, 1:]
    elif how == "store":  # the cold tier's first entry is not among the store's entries
        first = saved["cache"]["books"][2]["ids"]
        row_id = saved["store"]["row_id"].clone()
        row_id[row_id == first[first >= 0][0]] = -1
        saved["store"]["row_id"] = row_id
    elif how == "format":
        saved["cache_codes"]["format"] = "memstream.CacheKeyCodes/0"
    return saved


@pytest.mark.parametrize("how, message", [
    ("codes", "saved under other token codes than this model's; load the checkpoint's model weights"),
    ("row", r"does not fit the cache's \d+ cold entries and \d channel rows; the state is damaged"),
    ("scale", r"does not fit the cache's \d+ cold entries"),
    ("shape", r"the cache's cold data is \(\d+, 63\) torch.float32, expected \(\d+, 64\)"),
    ("store", "holds ids that are not the saved store's entries"),
    ("format", "its cache_codes is not a memstream.CacheKeyCodes/1 record"),
])
def test_a_damaged_compact_state_is_refused_in_one_line_and_the_memory_kept(how, message):
    model = filled(WARM)
    saved = model.memory_state_dict()
    assert len(saved["cache"]["data"]["channel"]) < 7  # (row 7 is past the rows)
    other = filled(WARM, calls=1)
    before = other.memory_state_dict(compact=False)
    with pytest.raises(ValueError, match=f"^memory state: .*{message}") as err:
        other.load_memory_state_dict(damage(saved, how))
    assert "\n" not in str(err.value)
    assert_same(before, other.memory_state_dict(compact=False), "memory")


def test_a_compact_state_needs_the_model_s_token_codes():
    """Loaded into a model of hidden addresses (another config), or one whose codes differ: refused, not keys of
    the wrong codes."""
    saved = filled(WARM).memory_state_dict()
    with pytest.raises(ValueError, match="key_source is not token; load it with the run's config"):
        MemNet(model_cfg(**{**WARM, "key_source": "hidden"})).load_memory_state_dict(saved)
    other = MemNet(model_cfg(**WARM))
    other.token_codes.add_(1.0)
    with pytest.raises(ValueError, match="other token codes"):
        other.load_memory_state_dict(saved)
    assert other.store is None or len(other.store) == 0
    assert np.isfinite(other.token_codes.numpy()).all()
