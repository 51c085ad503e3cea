"""MemNet's write mask per position: a position without write permission leaves no trace in any memory.

test_memnet.py's writes-mask test gives a lane all or none of its positions; here one lane writes some positions
of a call and not the later ones, whose tokens then differ: every memory (slot bank, internal memory, store,
cache) must end the same. The controller is causal, so the permitted positions' hidden states are the same too.
"""

import numpy as np
import pytest
import torch

from agents.memnet import MemNet
from tests.test_memnet import V, model_cfg


def same(a, b, where="memory") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a) or isinstance(a, np.ndarray):
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f"), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("internal", ["lm2", "linformer"])
def test_positions_without_write_permission_leave_no_trace_in_any_memory(internal):
    B, T, allowed = 2, 10, 6
    first = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    other = first.clone()
    other[:, allowed:] = (first[:, allowed:] + 1 + torch.arange(T - allowed)) % V  # only the unpermitted differ
    writes = torch.zeros(B, T, dtype=torch.bool)
    writes[:, :allowed] = True
    writes[1, 2] = False  # and one unpermitted position among the permitted ones (its token is the same)
    ends = []
    for tokens in (first, other):
        torch.manual_seed(0)
        model = MemNet(model_cfg(internal=internal)).eval()
        with torch.no_grad():
            start = model.initial_state(B)
            _, state, _ = model(tokens, start, writes)
        memory = {k: t for k, t in state.items() if not k.startswith(("ctrl.", "window."))}
        ends.append((memory, model.memory_state_dict()))
        for name in ("slot.memory", "internal"):
            assert not torch.equal(state[name], start[name]), name  # the permitted positions did write
        assert [model.store.size(b) for b in range(B)] == [allowed, allowed - 1]
    same(ends[0], ends[1])


@pytest.mark.parametrize("internal", ["lm2", "linformer"])
def test_a_writing_position_updates_the_internal_memory_alike_whatever_shares_its_call(internal):
    """One call with only its last position writing updates the internal memory as that position does alone, after
    a call that writes nothing. LM2's slots attended to the other positions too (zeroed, they took softmax mass):
    0.55 against 1.30 of an update."""
    torch.manual_seed(0)
    model = MemNet(model_cfg(internal=internal, slots=0, store=False)).eval()
    tokens = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(2))
    last = torch.zeros(1, 8, dtype=torch.bool)
    last[:, 7] = True
    with torch.no_grad():
        start = model.initial_state(1)
        _, together, _ = model(tokens, start, last)
        _, before, _ = model(tokens[:, :7], start, torch.zeros(1, 7, dtype=torch.bool))
        _, alone, _ = model(tokens[:, 7:], before, torch.ones(1, 1, dtype=torch.bool))
    assert not torch.equal(together["internal"], start["internal"])
    torch.testing.assert_close(together["internal"], alone["internal"])
