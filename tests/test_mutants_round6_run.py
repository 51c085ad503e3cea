"""Mutation-testing kills (round 6) for `python -m agents.run`'s own pieces: where a resume=/checkpoint= path's run
folder and checkpoint file are, the optimizer and per-lane tensors a checkpoint is checked for, the run folder's
generated name, the models' input checks and the parameter count the run prints first."""

import pytest
import torch
from omegaconf import OmegaConf

from agents.checkpoint_paths import CheckpointError, run_dir_of
from agents.checkpoint_tensors import check_lane_state, check_optimizer_state
from agents.models import ModelConfig, build_model
from agents.run import new_run_dir
from memory.config import MemoryConfig
from tests.test_mutants_round6_evaluate import _fake_run


def test_a_checkpoint_file_names_the_run_folder_above_its_checkpoints_folder(tmp_path):
    """resume=<run>/checkpoints/last.pt continues <run>, not <run>/checkpoints; a loose file's folder is its run."""
    run = _fake_run(tmp_path)
    assert run_dir_of(run / "checkpoints" / "last.pt") == run.resolve()
    (tmp_path / "loose.pt").write_bytes(b"x")
    assert run_dir_of(tmp_path / "loose.pt") == tmp_path.resolve()


def test_a_checkpoints_folder_names_its_run_unless_it_holds_a_run_of_its_own(tmp_path):
    """<run>/checkpoints is <run>; a checkpoints/ that holds a checkpoints/ of its own is a run folder itself."""
    run = _fake_run(tmp_path)
    assert run_dir_of(run / "checkpoints") == run.resolve()
    (run / "checkpoints" / "checkpoints").mkdir()
    assert run_dir_of(run / "checkpoints") == (run / "checkpoints").resolve()


def _stepped():
    """A real AdamW after one step, and its parameters' names."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return opt, {id(p): n for n, p in model.named_parameters()}, model.weight


def test_a_sound_optimizer_state_passes_and_a_beta_of_zero_is_in_range():
    """betas lie in [0, 1): beta1=0 (no momentum) is a valid AdamW setting, not a garbled one."""
    opt, names, _ = _stepped()
    check_optimizer_state(opt, names, "ck.pt")
    opt.param_groups[0]["betas"] = (0.0, 0.999)
    check_optimizer_state(opt, names, "ck.pt")


@pytest.mark.parametrize("key", ["eps", "weight_decay"])
def test_a_negative_eps_or_weight_decay_is_garbled(key):
    opt, names, _ = _stepped()
    opt.param_groups[0][key] = -0.1
    with pytest.raises(CheckpointError, match=rf"\(optimizer {key}=-0.1\)"):
        check_optimizer_state(opt, names, "ck.pt")


@pytest.mark.parametrize("edit, names_it", [
    (lambda s: s.update(step=torch.tensor([1.0, 2.0])), r"optimizer state step of weight: \[1.0, 2.0\] \(a count"),
    (lambda s: s.update(step=3), "optimizer state step of weight is a int, not a tensor"),
    (lambda s: s.update(exp_avg=s["exp_avg"].double()), r"exp_avg of weight is float64 \(2, 3\), the parameter "
                                                        r"float32 \(2, 3\)"),
])
def test_a_step_of_many_values_a_plain_number_or_a_moment_of_another_dtype_is_garbled(edit, names_it):
    """Each is named: not a traceback (float() of a 2-element tensor), nor loaded (fused AdamW, a float64 moment)."""
    opt, names, weight = _stepped()
    edit(opt.state[weight])
    with pytest.raises(CheckpointError, match=names_it):
        check_optimizer_state(opt, names, "ck.pt")


def test_a_buffer_end_at_the_buffers_size_is_in_range():
    """ctrl.end may equal the K/V buffer's size (a full buffer); one past it is refused."""
    cfg = ModelConfig(vocab_size=11, dim=16, layers=1, heads=2, window=4,
                      memory=MemoryConfig(dim=16, slots=0, store=False, attn_heads=2))
    model = build_model("memnet", cfg)
    fresh = model.initial_state(1)
    size = fresh["ctrl.k0"].shape[2]
    saved = {**fresh, "ctrl.end": torch.tensor(size)}
    check_lane_state(saved, fresh, {}, model, 1, trained=True)
    with pytest.raises(ValueError, match=rf"ctrl.end={size + 1} is outside the window buffer"):
        check_lane_state({**fresh, "ctrl.end": torch.tensor(size + 1)}, fresh, {}, model, 1, trained=True)


def test_a_generated_run_folder_is_named_by_env_agent_and_seed(tmp_path):
    cfg = OmegaConf.create({"run_dir": None, "runs_root": str(tmp_path), "env": {"id": "NeedleRecall-v0"},
                            "agent": {"name": "gru"}, "seed": 7})
    made = new_run_dir(cfg, create=True)
    assert made.is_dir() and made.parent == tmp_path.resolve() / "NeedleRecall-v0" / "gru"
    assert made.name.endswith("_s7")


def test_lanes_for_a_reset_must_be_one_flag_per_lane():
    from agents.models import check_lanes

    assert check_lanes([True, False], 2, torch.device("cpu")).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"^lanes: expected a \(2,\) bool mask, got torch.bool \(3,\)"):
        check_lanes([True, False, True], 2, torch.device("cpu"))


def test_a_negative_token_id_is_the_forward_inputs_one_line():
    """A token id below 0 is refused as one below the vocabulary is (an embedding's IndexError traceback otherwise)."""
    from agents.models import check_inputs

    with pytest.raises(ValueError, match=r"^tokens: ids must lie in \[0, 5\), got \[-1, 2\]"):
        check_inputs(torch.tensor([[-1, 2]]), None, 5, state={})


def test_the_transformer_baseline_has_no_internal_memory():
    """agent=transformer is MemNet with the slot bank, store and internal memory (memory.internal) all off."""
    from agents.models import memory_free

    cfg = ModelConfig(vocab_size=11, dim=16, layers=1, heads=2, window=4,
                      memory=MemoryConfig(dim=16, slots=4, store=True, attn_heads=2, internal="lm2",
                                          internal_slots=4))
    free = memory_free(cfg).memory
    assert (free.slots, free.store, free.internal) == (0, False, "none")
    assert "internal" not in build_model("transformer", cfg).initial_state(1)


def test_the_first_line_counts_every_parameter_of_the_model(tmp_path, capsys):
    """agents.run's first line: "(N parameters)" is the model's whole count, its 1-d biases and gains included."""
    import re

    from agents import run
    from tests.test_run import tiny

    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "gru", run_dir, "train.episodes=0", "train.lanes=2")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    weights = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    count = sum(t.numel() for t in weights.values())
    assert any(t.dim() == 1 for t in weights.values())
    assert re.search(rf"ContinualShift-v0 / gru \({count:,} parameters\), 2 lanes, 0 episodes -> ", first), first


def test_a_baseline_refuses_memory_objects_it_does_not_have():
    """An LSTM given a checkpoint's store/cache state says so (not loaded as nothing, silently)."""
    cfg = ModelConfig(vocab_size=11, dim=16, layers=1, heads=2, window=4,
                      memory=MemoryConfig(dim=16, slots=0, store=False, attn_heads=2))
    model = build_model("lstm", cfg)
    model.load_memory_state_dict({})
    with pytest.raises(ValueError, match=r"^RecurrentAgent has no memory objects, but the checkpoint holds \['store'"):
        model.load_memory_state_dict({"store": {}})
