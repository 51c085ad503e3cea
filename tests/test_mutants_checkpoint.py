"""Checkpoint refusals a mutation round found unchecked: each required section missing (not only the optimizer),
another env id, weights with a key missing or extra (not only of another shape), and a checkpoint whose training
settings are not its run folder's (not only its seed or model)."""

from __future__ import annotations

import pytest
import torch
import yaml

from agents.checkpoint import (
    CHECKPOINT_VERSION,
    FORMAT,
    CheckpointError,
    check_compatible,
    check_own_run,
    load_checkpoint,
    load_model_weights,
)

SECTIONS = ("config", "model", "optimizer", "state", "memory", "trainer", "rng")


@pytest.mark.parametrize("missing", SECTIONS)
def test_a_checkpoint_without_any_one_section_is_refused_naming_it(tmp_path, missing):
    body = {"format": FORMAT, "version": CHECKPOINT_VERSION} | {k: {} for k in SECTIONS if k != missing}
    torch.save(body, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=rf"is incomplete \(missing {missing}\); resume from another run"):
        load_checkpoint(tmp_path / "last.pt")
    torch.save(body | {missing: {}}, tmp_path / "last.pt")
    assert set(load_checkpoint(tmp_path / "last.pt")) == {"format", "version", *SECTIONS}


def _config(env="LongDependency-v0", agent="memnet") -> dict:
    return {"env": {"id": env}, "agent": {"name": agent}, "model": {"dim": 32}, "memory": {"store": True}}


@pytest.mark.parametrize("other, named", [
    (_config(env="NeedleRecall-v0"), "env.id: LongDependency-v0 vs NeedleRecall-v0"),
    (_config(agent="lstm"), "agent: {'name': 'memnet'} vs {'name': 'lstm'}"),
])
def test_another_env_or_agent_is_another_architecture(other, named):
    check_compatible(_config(), _config(), "ck.pt")  # the same: no complaint
    with pytest.raises(CheckpointError) as info:
        check_compatible(_config(), other, "ck.pt")
    assert f"was written by another architecture ({named}); use the run's own config.yaml" in str(info.value)


@pytest.mark.parametrize("edit", ["drop bias", "extra key"])
def test_weights_with_a_key_missing_or_extra_do_not_fit(edit):
    model = torch.nn.Linear(3, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if edit == "drop bias":
        del weights["bias"]
    else:
        weights["scale"] = torch.ones(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit this model \((Missing|Unexpected) key\(s\)"):
        load_model_weights(model, weights, "ck.pt")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _folder(tmp_path, **train) -> dict:
    config = {"env": {"id": "LongDependency-v0"}, "agent": {"name": "lstm"}, "model": {"dim": 32}, "memory": {},
              "seed": 0, "train": {"lr": 0.001, "episodes": 4, "threads": 1, "progress": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return config | {"train": config["train"] | train}


@pytest.mark.parametrize("train, refused", [({"lr": 0.01}, "train.lr=0.01"), ({"episodes": 8}, "train.episodes=8"),
                                            ({"threads": 2, "progress": True}, None)])
def test_a_checkpoint_whose_training_settings_are_not_its_folders_is_refused(tmp_path, train, refused):
    saved = _folder(tmp_path, **train)
    if refused is None:  # how a run runs (threads, progress) may change on resume
        check_own_run(saved, tmp_path, tmp_path / "last.pt", "resume")
        return
    with pytest.raises(CheckpointError, match=rf"is not this run folder's: it has {refused}, the folder's"):
        check_own_run(saved, tmp_path, tmp_path / "last.pt", "resume")
