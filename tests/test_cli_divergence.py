"""A run or an evaluation whose training diverges: one `training diverged ...; lower train.lr` line, exit code 2,
wherever the divergence shows first (the loss, the weights, the memory writes, the store's inner products,
REINFORCE's sampling, an evaluation)."""

import pytest

from agents import evaluate, run
from tests.test_cli_errors import one_error_line
from tests.test_run import tiny


@pytest.mark.parametrize("agent, extra, message", [
    ("transformer", ["train.lr=1e20"], "training diverged in episode 1 (an update made weights non-finite; "
                                       "train.lr=1e+20"),
    ("memnet", ["train.lr=1e6"], "training diverged in episode 1 (MemNet: non-finite hidden states (NaN or inf) "
                                 "reached the memory writes; train.lr=1000000.0, train.grad_clip=1.0); lower train.lr"),
    # finite weights too large for the store's float32 inner products: its "scale them down, or use metric='cosine'"
    ("memnet", ["train.lr=1e12"], "training diverged in episode 1 (MemNet: store queries of norm "),
    # REINFORCE samples its actions before any loss is checked: torch's Categorical refused the NaN logits
    ("transformer", ["train.lr=1e6", "train.mode=reinforce"], "training diverged in episode 1 (non-finite logits (NaN "
                                                              "or inf) reached the policy's sampling; train.lr="),
    ("transformer", ["train.lr=1e6", "train.mode=reinforce", "train.acting=step"], "training diverged in episode 1 ("
                                                                                   "non-finite logits"),
])
def test_a_learning_rate_that_makes_training_diverge_stops_the_run_with_one_line(tmp_path, capsys, agent, extra,
                                                                                 message):
    """Was: a traceback from the store refusing NaN memories (memnet), or a run that ended with NaN weights and
    every number 0.000 (transformer)."""
    assert run.main(tiny("ContinualShift-v0", agent, tmp_path / "run", *extra)) == 2
    one_error_line(capsys, message)


def test_a_run_that_stops_closes_its_progress_bar_first(tmp_path, capsys):
    """The bar was closed on success only: the error line was written onto the bar's line, then the bar again."""
    assert run.main(tiny("ContinualShift-v0", "transformer", tmp_path / "run", "train.lr=1e20",
                         "train.progress=true")) == 2
    err = capsys.readouterr().err
    lines = err.replace("\r", "\n").splitlines()
    errors = [line for line in lines if "error: " in line]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged in episode 1"), err
    assert lines[-1] == errors[0]  # the last thing written: no bar after it


@pytest.mark.parametrize("after, where", [(0, "before training"), (1, "by the evaluation after episode 1")])
def test_a_divergence_found_by_an_evaluation_names_the_evaluation(tmp_path, capsys, monkeypatch, after, where):
    """MemNet's check of the activations also runs in an evaluation's chunk calls (they write memory); the line
    named episode N + 1, which had not started. Raised here by hand: weights that pass training's checks but
    overflow the next evaluation are rare."""
    from agents.trainer import Trainer

    real = Trainer._evaluate  # one task's evaluation (evaluate_all's and evaluate_task's)

    def diverges(self, *args, **kwargs):
        if self.episode == after:
            raise FloatingPointError("MemNet: non-finite hidden states (NaN or inf) reached the memory writes")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_evaluate", diverges)
    assert run.main(tiny("ContinualShift-v0", "memnet", tmp_path / "run")) == 2
    one_error_line(capsys, f"training diverged {where} (MemNet: non-finite hidden states")


def test_evaluating_a_checkpoint_whose_weights_overflow_is_one_line(tmp_path, capsys, monkeypatch):
    from agents.trainer import Trainer

    assert run.main(tiny("ContinualShift-v0", "memnet", tmp_path / "run")) == 0
    capsys.readouterr()

    def diverges(self, *args, **kwargs):
        raise FloatingPointError("MemNet: non-finite hidden states (NaN or inf) reached the memory writes")

    monkeypatch.setattr(Trainer, "_evaluate", diverges)
    assert evaluate.main([f"checkpoint={tmp_path / 'run'}"]) == 2
    one_error_line(capsys, "its weights diverged (MemNet: non-finite hidden states (NaN or inf) reached the memory "
                           "writes); evaluate an earlier run, or re-run it with a lower train.lr")
    assert not (tmp_path / "run" / "eval.json").exists()


@pytest.mark.parametrize("agent, extra, key", [
    # the weighted term is -3.4e38, finite, and its gradient overflows: "an update made weights non-finite"
    ("memnet", ["memory.util_weight=1e38"], "memory.util_weight=1e+38"),
    # the entropy bonus is -inf itself: "the loss is -inf"
    ("transformer", ["train.mode=reinforce", "train.entropy_coef=1e38"], "train.entropy_coef=1e+38"),
])
def test_a_loss_weight_that_overflows_its_term_is_named_not_the_learning_rate(tmp_path, capsys, agent, extra, key):
    """Was: "training diverged ...; lower train.lr", the wrong fix: the weights accept any finite number >= 0."""
    assert run.main(tiny("ContinualShift-v0", agent, tmp_path / "run", *extra)) == 2
    one_error_line(capsys, f"training stopped in episode 1: the loss term weighted by {key} is ")


def test_overflowing_weight_blames_a_term_near_float32s_limit_only():
    import torch

    from agents.config import load_config
    from agents.objectives import overflowing_weight

    cfg = load_config(["memory.util_weight=1e38", "train.entropy_coef=2.0"])
    assert overflowing_weight({}, cfg) is None
    assert overflowing_weight({"memory.util_weight": torch.tensor(-1e29)}, cfg) is None  # large, not at the limit
    assert overflowing_weight({"memory.util_weight": torch.tensor(float("nan"))}, cfg) is None  # NaN inputs: divergence
    hint = overflowing_weight({"train.entropy_coef": torch.tensor(-1.0),
                               "memory.util_weight": torch.tensor(float("-inf"))}, cfg)
    assert hint == ("the loss term weighted by memory.util_weight=1e+38 is -inf, at float32's limit (~3.4e38), and it "
                    "or its gradient overflowed; lower memory.util_weight")
