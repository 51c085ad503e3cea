"""The LSTM's and GRU's model keys that change nothing (`agents.inert_notes.baseline_model_keys`): model.heads and
model.window (no attention: nor does the window bound their train.chunk), model.dropout with one layer. Each is
checked to change nothing, bit for bit, and to be named in agents.run's and agents.tune's `note:` line, as the
baselines' memory.* keys are (tests/test_inert_notes.py)."""

import contextlib
import io
import re

import pytest
import torch

from agents import run
from agents.config import load_config
from agents.inert_notes import inert_note
from agents.models import ModelConfig, build_model
from memory.config import MemoryConfig
from tests.test_run import tiny

V, B, T = 19, 3, 12


def trained_step(agent: str, **model) -> tuple[list, list, torch.Tensor]:
    """A baseline built from a fixed seed and given one training step's forward and backward: its weights, their
    gradients and the logits."""
    torch.manual_seed(0)
    net = build_model(agent, ModelConfig(vocab_size=V, dim=16, memory=MemoryConfig(dim=16), **model)).train()
    tokens = torch.randint(V, (B, T), generator=torch.Generator().manual_seed(1))
    logits, _, _ = net(tokens, net.initial_state(B))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    return [p.detach().clone() for p in net.parameters()], [p.grad for p in net.parameters()], logits.detach()


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, list):
            assert_same(x, y)
        else:
            assert torch.equal(x, y)


@pytest.mark.parametrize("agent", ["lstm", "gru"])
@pytest.mark.parametrize("key, values, fixed", [
    ("heads", (1, 2, 4), {}),
    ("window", (1, 8, 64), {}),
    ("dropout", (0.0, 0.5), {"layers": 1}),
])
def test_each_noted_key_changes_nothing(agent, key, values, fixed):
    first, *others = [trained_step(agent, **fixed, **{key: v}) for v in values]
    for other in others:
        assert_same(first, other)


@pytest.mark.parametrize("agent", ["lstm", "gru"])
def test_a_width_their_unread_heads_do_not_divide_is_taken(agent):
    """`agent=lstm model.dim=18` was refused for model.heads=4 (a key not given, which the model never reads); it
    builds the model of any heads that fit. An odd width fits no heads and a non-positive heads is still refused."""
    from agents.config import ConfigError
    from agents.models import build_agent

    def built(*extra):
        return build_agent(load_config([f"agent={agent}", *extra]), V, torch.device("cpu"))[1]

    torch.manual_seed(0)
    taken = built("model.dim=18")
    torch.manual_seed(0)
    assert_same([p.detach() for p in taken.parameters()], [p.detach() for p in built("model.dim=18", "model.heads=1")
                                                           .parameters()])
    for bad, why in ((("model.dim=17",), "model.heads=4: must divide dim=17"),
                     (("model.dim=18", "model.heads=0"), "model.heads=0: must divide dim=18")):
        with pytest.raises(ConfigError, match=f"^{why}$"):
            load_config([f"agent={agent}", *bad])
    with pytest.raises(ConfigError, match=r"^model.heads=4: must divide dim=18$"):  # the transformer reads them
        load_config(["agent=transformer", "model.dim=18"])


def test_dropout_acts_with_two_layers():  # the check above can fail: with two layers the same change is seen
    one, two = (trained_step("gru", layers=2, dropout=p) for p in (0.0, 0.5))
    assert not torch.equal(one[2], two[2])


@pytest.mark.parametrize("overrides, keys, note", [
    (["agent=gru"], ["model.heads", "model.window", "model.dim", "seed"],
     "note: agent=gru has no attention; model.heads, model.window change nothing"),
    (["agent=lstm", "model.layers=1", "model.dropout=0.2"], ["model.layers", "model.dropout"],
     "note: model.dropout changes nothing with model.layers=1 (agent=lstm drops out between layers)"),
    (["agent=lstm", "model.dropout=0.2"], ["model.dropout"], None),  # two layers: it acts
    (["agent=gru"], ["memory.slots", "model.heads"],
     "note: agent=gru has no memory; memory.slots changes nothing; agent=gru has no attention; model.heads changes "
     "nothing"),
    (["agent=transformer"], ["model.heads", "model.window", "model.dropout"], None),
    (["agent=memnet"], ["model.heads", "model.window"], None),
])
def test_the_note_names_them(overrides, keys, note):
    assert inert_note(load_config(overrides), keys) == note


def test_agents_run_notes_them_and_goes_on(tmp_path):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert run.main(tiny("LongDependency-v0", "gru", tmp_path / "run", "model.heads=2")) == 0
    notes = [line for line in buffer.getvalue().splitlines() if line.startswith("note:")]
    # (the tiny run's own model.window and memory.* overrides are named too: the same overrides serve every agent)
    assert len(notes) == 1
    assert notes[0].endswith("; agent=gru has no attention; model.window, model.heads change nothing")
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("extra, note", [
    (["sweep.search_space.model.heads=grid:[2,4]"],
     "note: agent=gru has no memory; memory.slots, memory.pressure_weight change nothing; agent=gru has no attention; "
     "model.heads changes nothing (every trial of this sweep runs the same settings)"),
    (["sweep.search_space.model.window=grid:[32,64]", "sweep.search_space.train.lr=grid:[0.001,0.01]"],
     "note: agent=gru has no memory; memory.slots, memory.pressure_weight change nothing; agent=gru has no attention; "
     "model.window changes nothing (the trials differ only in train.lr)"),
    (["train.entropy_coef=0.1"],
     "note: agent=gru has no memory; memory.slots, memory.pressure_weight change nothing; train.entropy_coef changes "
     "nothing with train.mode=supervised (REINFORCE's settings) (every trial of this sweep runs the same settings)"),
    # the layers or the training mode are swept: whether dropout or the entropy bonus acts depends on the trial, so
    # the note leaves them out
    (["train.entropy_coef=0.1", "sweep.search_space.train.mode=grid:[supervised,reinforce]"],
     "note: agent=gru has no memory; memory.slots, memory.pressure_weight change nothing (the trials differ only in "
     "train.mode)"),
    (["model.dropout=0.1", "sweep.search_space.model.layers=grid:[1,2]"],
     "note: agent=gru has no memory; memory.slots, memory.pressure_weight change nothing (the trials differ only in "
     "model.layers)"),
])
def test_a_sweep_of_them_says_so(tmp_path, capsys, extra, note):
    from agents.tune_prepare import prepare

    prepare(["env=ContinualShift-v0", "agent=gru", "sweep=smoke", *extra, f"runs_root={tmp_path}"])
    assert capsys.readouterr().err.strip() == note


@pytest.mark.parametrize("extra, note", [
    (["train.entropy_coef=0.1"], "note: train.entropy_coef changes nothing with train.mode=supervised (REINFORCE's "
                                 "settings) (the trials differ only in memory.slots, memory.pressure_weight)"),
    (["train.entropy_coef=0.1", "train.mode=reinforce"], None),
    (["memory.store=false", "memory.store_top_k=3"], None),  # MemNet's memory keys: each trial's values decide
])
def test_a_memnet_sweep_notes_the_reinforce_settings_under_supervised_training(tmp_path, capsys, extra, note):
    from agents.tune_prepare import prepare

    prepare(["env=ContinualShift-v0", "sweep=smoke", *extra, f"runs_root={tmp_path}"])
    assert capsys.readouterr().err.strip() == (note or "")


@pytest.mark.parametrize("agent, chunk, refusal", [
    ("lstm", 256, None), ("gru", 65_536, None),  # past model.window=64: they have none
    ("gru", 65_537, "train.chunk=65537: must be in [1, 65536]"),
    ("transformer", 65, "train.chunk=65: must be in [1, model.window=64]"),
    ("memnet", 65, "train.chunk=65: must be in [1, model.window=64]"),
])
def test_a_recurrent_baseline_s_chunk_is_not_bound_by_a_window(agent, chunk, refusal):
    from agents.config import ConfigError

    if refusal is None:
        assert load_config([f"agent={agent}", f"train.chunk={chunk}"]).train.chunk == chunk
    else:
        with pytest.raises(ConfigError, match=f"^{re.escape(refusal)}$"):
            load_config([f"agent={agent}", f"train.chunk={chunk}"])


def test_an_lstm_learns_on_chunks_longer_than_the_window(tmp_path):
    """A run with the tiny model's window of 16 and chunks of 64: each episode of 64 steps is one learning chunk."""
    from agents.trainer import Trainer

    trainer = Trainer(load_config(tiny("LongDependency-v0", "lstm", tmp_path / "run", "train.chunk=64")), tmp_path)
    stats = trainer.train_episode()
    assert (stats.steps, stats.updates) == (64, 1) and trainer.cfg.model.window == 16
