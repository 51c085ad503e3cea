"""Memory cores in other float dtypes: a float16 slot bank reads and writes; a state of another float dtype than
the core's is one ValueError line (it failed inside a matmul)."""

import pytest
import torch

from memory.slots import SlotState
from tests.test_memory_slots import make_bank


def test_a_float16_bank_reads_and_writes():
    """The masked-logit fill, -1e9, is no float16 value: a bank made with .half() failed at its first read ("value
    cannot be converted to type c10::Half without overflow"). Its read weights are a softmax over the written slots
    (zeros for a head that found only empty ones), as in float32."""
    bank = make_bank(slots=8).half()
    state = bank.initial_state(2)
    x = torch.randn(2, 3, 32).half()
    reads, state, _, _ = bank(x, state, torch.tensor([[True, True, False], [False, False, False]]))
    assert reads.dtype == torch.float16 and torch.isfinite(reads).all()
    _, info = bank.read(x, state)
    sums = info.weights.float().sum(-1)  # (B, Q, H)
    torch.testing.assert_close(sums[0], torch.ones_like(sums[0]), rtol=0, atol=2e-3)
    assert (sums[1] == 0).all()  # lane 1 wrote nothing: its heads select only empty slots


def test_a_state_of_another_float_dtype_is_one_line():
    """A float64 state failed inside a matmul ("expected scalar type Double but found Float")."""
    bank = make_bank()
    state = SlotState(*(t.double() if t.is_floating_point() else t for t in bank.initial_state(1)))
    with pytest.raises(ValueError, match=r"^state.memory is torch.float64, the bank computes in torch.float32: pass "
                                         r"the state its initial_state made, or convert its float tensors with "
                                         r"\.to\(torch.float32\)$"):
        bank.read(torch.randn(1, 2, 32), state)
    with pytest.raises(ValueError, match=r"^state.usage is torch.float64"):
        bank.write(torch.randn(1, 2, 32), state._replace(memory=state.memory.float()), torch.ones(1, 2, dtype=bool))
