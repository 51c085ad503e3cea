"""A forward's bad inputs are one-line ValueErrors for every agent: tokens out of range, a writes mask that is not
bool, a state that is no dict or belongs to other lanes, another model, the other recurrent cell or other dtypes."""

import pytest
import torch

from agents.baselines import RecurrentAgent
from agents.models import build_model
from tests.test_models import V, small_cfg


def test_bad_forward_inputs_give_clear_errors():
    model = build_model("transformer", small_cfg())
    state = model.initial_state(2)
    with pytest.raises(ValueError, match=r"tokens: ids must lie in \[0, 23\)"):
        model(torch.full((2, 3), V), state)
    with pytest.raises(ValueError, match="writes: expected a bool tensor"):
        model(torch.zeros(2, 3, dtype=torch.long), state, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="state: made for 2 lanes"):
        model(torch.zeros(3, 3, dtype=torch.long), state)
    with pytest.raises(ValueError, match="lanes: expected a"):
        model.reset_memory(state, torch.tensor([1, 0]))
    lstm = RecurrentAgent(small_cfg(), cell="lstm")
    with pytest.raises(ValueError, match="state: made for 2 lanes"):
        lstm(torch.zeros(3, 3, dtype=torch.long), lstm.initial_state(2))


@pytest.mark.parametrize("agent", ["memnet", "transformer", "lstm", "gru"])
@pytest.mark.parametrize("state", [None, [], "state"])
def test_a_forward_without_a_state_dict_names_the_state(agent, state):
    """model(tokens, None, ...) was an AttributeError ('NoneType' object has no attribute 'items') deep inside."""
    model = build_model(agent, small_cfg())
    with pytest.raises(ValueError, match=rf"^state: expected the dict of tensors that initial_state\(B\) or a "
                                         rf"previous call returns, got {type(state).__name__}$"):
        model(torch.zeros(2, 3, dtype=torch.long), state, torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("agent, other, message", [
    # a smaller window's buffers were sliced where their columns are not: logits off by up to 0.53, without a word
    ("transformer", dict(window=4), "state['ctrl.k0'] is (2, 4, 35, 8), this model makes (2, 4, 39, 8): a state of "
                                    "a model with other sizes; make it with this model's initial_state(B)"),
    ("transformer", dict(window=16), "state['ctrl.k0'] is (2, 4, 47, 8), this model makes (2, 4, 39, 8)"),  # was a
    ("transformer", dict(layers=1), "state: lacks ['ctrl.k1', 'ctrl.v1']: a state of another model"),  # RuntimeError
    ("lstm", dict(dim=16, heads=2), "state['h'] is (2, 2, "),  # torch's RNN error
])
def test_a_state_of_another_model_is_one_line(agent, other, message):
    model, foreign = build_model(agent, small_cfg()), build_model(agent, small_cfg(**other))
    with pytest.raises(ValueError) as err:
        model(torch.zeros(2, 3, dtype=torch.long), foreign.initial_state(2))
    assert str(err.value).startswith(message), str(err.value)


def test_a_state_of_the_other_recurrent_cell_or_of_another_agent_is_one_line():
    lstm, gru, transformer = (build_model(a, small_cfg()) for a in ("lstm", "gru", "transformer"))
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^state: lacks \['c'\]: a state of another model"):  # was KeyError 'c'
        lstm(tokens, gru.initial_state(2))
    with pytest.raises(ValueError, match=r"^state: has \['c'\], which this model does not make"):
        gru(tokens, lstm.initial_state(2))
    with pytest.raises(ValueError, match=r"^state: lacks \['ctrl.end'.*and has \['h'\]"):  # was KeyError 'pos'
        transformer(tokens, gru.initial_state(2))


@pytest.mark.parametrize("agent", ["memnet", "transformer", "lstm"])
def test_a_state_of_other_dtypes_is_one_line_and_a_models_own_dtype_is_kept(agent):
    """A float64 state failed inside the slot bank (torch's "expected scalar type Double but found Float"), a float
    clock inside the store's meta ("meta['step'] must be integers", a field the caller may not pass); the LSTM took
    a float64 state without a word."""
    model, tokens = build_model(agent, small_cfg()), torch.zeros(2, 3, dtype=torch.long)
    state = model.initial_state(2)
    name = next(k for k, t in state.items() if t.is_floating_point())
    with pytest.raises(ValueError, match=rf"^state\['{name}'\] is torch.float64, this model makes torch.float32: "):
        model(tokens, {**state, name: state[name].double()})
    if "ctrl.pos" in state:
        with pytest.raises(ValueError, match=r"^state\['ctrl.pos'\] is torch.float32, this model makes torch.int64"):
            model(tokens, {**state, "ctrl.pos": state["ctrl.pos"].float()})
    if agent != "lstm":  # (the LSTM runs in float32 whatever its weights: CPU autocast, its forward)
        model.double()  # the model's own dtype: the check follows it, and the states it makes are taken
        _, after, _ = model(tokens, model.initial_state(2))
        model(tokens, after)


@pytest.mark.parametrize("agent", ["memnet", "lstm"])
def test_a_writes_mask_that_is_not_bool_is_one_line(agent):
    """writes=torch.full((B, T), 0.3) was cast to True: a write at every position."""
    model = build_model(agent, small_cfg())
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^writes: expected a bool tensor, got torch.float32; pass a mask"):
        model(tokens, model.initial_state(2), torch.full((2, 3), 0.3))
