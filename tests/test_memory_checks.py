"""The memory cores' argument checks (memory/checks.py): a wrong dtype or shape is one ValueError line naming the
argument and the fix; it failed inside torch before ("mat1 and mat2 must have the same dtype", "~ (operator.invert)
is only implemented on integer and Boolean-type tensors", "not enough values to unpack")."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memory.attention import MemoryAttention
from memory.checks import all_finite
from memory.config import MemoryConfig
from memory.internal import LinformerMemory, LM2Memory
from memory.slots import MultiHeadMemoryBank
from tests.examples import examples

CFG = MemoryConfig(dim=16, slots=8, read_heads=2, top_k=2, internal_slots=4, attn_heads=2)


@pytest.mark.parametrize("make", [MultiHeadMemoryBank, LM2Memory, LinformerMemory], ids=lambda c: c.__name__)
def test_a_float64_or_integer_input_names_the_dtype_and_the_fix(make):
    core = make(CFG)
    state = core.initial_state(2)
    bank = make is MultiHeadMemoryBank
    name, extra = ("query", (torch.ones(2, 3, dtype=torch.bool),)) if bank else ("h", ())
    with pytest.raises(ValueError, match=rf"^{name} is torch.float64, the weights torch.float32: pass "
                                         rf"{name}.to\(torch.float32\)"):
        core(torch.randn(2, 3, 16, dtype=torch.float64), state, *extra)
    with pytest.raises(ValueError, match=rf"^{name}: expected a floating tensor, got torch.int64"):
        core(torch.ones(2, 3, 16, dtype=torch.long), state, *extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast any float input is the caller's choice
        out = core(torch.randn(2, 3, 16, dtype=torch.bfloat16), state, *extra)
    assert torch.isfinite(out[0].float()).all()


def test_a_slot_state_of_the_wrong_dtypes_is_refused():
    bank = MultiHeadMemoryBank(CFG)
    state = bank.initial_state(2)
    x, mask = torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^state.written is torch.float32 \(2, 8\), expected bool \(2, 8\); pass "
                                         r"the state the bank's initial_state or forward returned$"):
        bank(x, state._replace(written=state.written.float()), mask)
    with pytest.raises(ValueError, match=r"^state.memory is torch.int64"):
        bank(x, state._replace(memory=state.memory.long()), mask)


def test_memory_attention_names_a_query_of_the_wrong_shape_or_dtype():
    attn = MemoryAttention(CFG)
    with pytest.raises(ValueError, match=r"^MemoryAttention: x must be \(B, T, D\), got torch.Size\(\[2, 16\]\)$"):
        attn(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"^x is torch.float64, the weights torch.float32"):
        attn(torch.randn(2, 3, 16, dtype=torch.float64))
    assert attn(torch.randn(2, 3, 16))[0].shape == (2, 3, 16)


@pytest.mark.parametrize("call, line", [
    (lambda a: a(torch.randn(2, 3, 15)), r"MemoryAttention: x's last dimension must be 16, got shape \(2, 3, 15\)"),
    (lambda a: a(torch.randn(2, 3, 16), context=torch.randn(2, 4, 8)),
     r"MemoryAttention: context's last dimension must be 16, got shape \(2, 4, 8\)"),
    (lambda a: a(torch.randn(2, 3, 16), query_input=torch.randn(2, 3, 8)),
     r"MemoryAttention: query_input's last dimension must be 16"),
    (lambda a: a(torch.randn(2, 3, 16), key_input=torch.ones(2, 3, 16, dtype=torch.long)),
     r"MemoryAttention: key_input must be a floating tensor, got torch.int64"),
    (lambda a: a(torch.randn(2, 3, 16), *(torch.randn(2, 3, 4, 2, 8, dtype=torch.float64),) * 2),
     r"mem_k is torch.float64, the weights torch.float32: pass mem_k.to\(torch.float32\)"),
    (lambda a: a.project_kv(torch.randn(5, 15)),
     r"MemoryAttention: h's last dimension must be 16, got shape \(5, 15\)"),
    (lambda a: a.project_kv(torch.randn(5, 16), torch.randn(5, 3)),
     r"MemoryAttention: key_input's last dimension must be 16"),
])
def test_memory_attention_names_an_input_of_the_wrong_width_or_dtype(call, line):
    """Each failed inside a matmul ("mat1 and mat2 shapes cannot be multiplied", "expected scalar type Float but
    found Double"), naming no argument."""
    with pytest.raises(ValueError, match=rf"^{line}") as err:
        call(MemoryAttention(CFG))
    assert "\n" not in str(err.value)


def test_other_arguments_of_the_wrong_kind_are_one_line():
    import numpy as np

    from memory.cache import TieredKVCache
    from memory.metrics import SlotLifetimeTracker
    from memory.retrieval import retrieve_memory_kv
    from memory.store import FaissStore

    store, cache = FaissStore(16, 1, capacity=4), TieredKVCache(2, 8, hot=4, warm=0, cold=0)
    with pytest.raises(ValueError, match=r"^retrieve_memory_kv: queries must be a \(B, T, D\) tensor, got ndarray$"):
        retrieve_memory_kv(store, cache, np.zeros((1, 1, 16), dtype=np.float32), k=2)  # was AttributeError: .dim
    with pytest.raises(ValueError, match=r"^batch_size=1.5: must be an int >= 1$"):
        SlotLifetimeTracker(1.5, 2)  # was numpy's "'float' object cannot be interpreted as an integer"
    with pytest.raises(ValueError, match=r"^slots=0: must be an int >= 1$"):
        SlotLifetimeTracker(2, 0)
    with pytest.raises(ValueError, match=r"^min_gate=1.5: must be a number in \[0, 1\]$"):  # no write gate reaches it
        SlotLifetimeTracker(2, 3, min_gate=1.5)
    with pytest.raises(ValueError, match=r"^min_gate='0.5': must be a number in \[0, 1\]$"):  # failed at the <=
        SlotLifetimeTracker(2, 3, min_gate="0.5")
    assert SlotLifetimeTracker(np.int64(2), 3).survival_curve() is not None


@settings(max_examples=examples(200), deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), step=st.integers(1, 3))
def test_all_finite_answers_as_isfinite_all(values, dtype, step):
    """MemNet's check before its memory writes (a sum of t * 0 instead of isfinite(t).all(), ~10x faster): the same
    answer for any values, huge finite ones included (3e38 * 0 is 0), half precisions and strided views."""
    t = torch.tensor(values, dtype=torch.float32).to(dtype)[::step]
    assert all_finite(t) == bool(torch.isfinite(t).all())
    assert all_finite(t.reshape(1, -1, 1).expand(2, -1, 3)) == bool(torch.isfinite(t).all())


@pytest.mark.parametrize("call, line", [
    (lambda a, x, m: a(x.numpy()), r"MemoryAttention: x must be a torch tensor, got ndarray$"),
    (lambda a, x, m: a.project_kv(x[:, 0].numpy()), r"MemoryAttention: h must be a torch tensor, got ndarray$"),
    (lambda a, x, m: a(x, m.numpy(), m.numpy(), torch.ones(2, 3, 4, dtype=torch.bool)),
     r"MemoryAttention: mem_k must be a torch tensor, got ndarray$"),
    (lambda a, x, m: a(x, m, m, torch.ones(2, 3, 4, dtype=torch.bool).numpy()),
     r"MemoryAttention: mem_mask must be a torch tensor, got ndarray$"),
])
def test_memory_attention_names_numpy_inputs(call, line):
    """A numpy x was reported with its own, right shape ("x must be (B, T, D), got (2, 3, 16)"), a numpy h as a wrong
    width ("got shape ndarray"), and numpy memories failed with AttributeError: 'numpy.ndarray' has no 'dim'."""
    x, m = torch.randn(2, 3, 16), torch.randn(2, 3, 4, 2, 8)
    with pytest.raises(ValueError, match=rf"^{line}") as err:
        call(MemoryAttention(CFG), x, m)
    assert "\n" not in str(err.value)
