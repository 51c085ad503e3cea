"""Mutation-testing kills for the recurrent baselines: model.dropout reaches a stacked LSTM / GRU."""

import pytest
import torch

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
