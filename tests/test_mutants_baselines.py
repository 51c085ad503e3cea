"""Mutation-testing kills for the recurrent baselines: model.dropout reaches a stacked LSTM / GRU; a bad hidden size."""

import pytest
import torch

from agents.baselines import RecurrentAgent
from agents.models import build_model
from tests.test_models import V, small_cfg


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_dropout_acts_between_stacked_recurrent_layers_in_training_only(cell):
    """With 2 layers, model.dropout drops the first layer's outputs in training (two passes differ) and nothing in
    evaluation; the transformer it is compared with trains with the same dropout."""
    torch.manual_seed(0)
    model = build_model(cell, small_cfg(layers=2, dropout=0.5))
    tokens = torch.randint(0, V, (2, 6))

    def logits():
        return model(tokens, model.initial_state(2))[0]

    model.train()
    assert not torch.allclose(logits(), logits())
    model.eval()
    torch.testing.assert_close(logits(), logits())


@pytest.mark.parametrize("hidden", [0, -3, 2.5, True])
def test_a_hidden_size_that_is_no_positive_int_is_one_line_naming_hidden(hidden):
    """hidden=0 failed inside nn.LSTM ("input_size must be greater than zero"), 2.5 as a TypeError of nn.Embedding."""
    with pytest.raises(ValueError, match=rf"^hidden={hidden!r}: must be an int >= 1$"):
        RecurrentAgent(small_cfg(), "gru", hidden=hidden)
    assert RecurrentAgent(small_cfg(), "gru", hidden=5).rnn.hidden_size == 5
