"""An evaluation leaves the memory as it found it and evaluates every task from that memory (`memory_undo`)."""

import pytest
import torch

from agents.config import load_config
from agents.trainer import Trainer
from tests.test_resume import assert_same
from tests.test_run import tiny


def trained(tmp_path, agent="memnet", *extra) -> Trainer:
    trainer = Trainer(load_config(tiny("ContinualShift-v0", agent, tmp_path, *extra)), tmp_path)
    trainer.train_episode()
    return trainer


def assert_same_memory(a: dict, b: dict) -> None:
    assert_same(a, b, "memory")


def test_evaluating_every_task_leaves_memory_weights_and_state_as_they_were(tmp_path):
    """Afterwards the store, the cache, the recurrent state and the weights are exactly what training left, and the
    store and cache are the same objects (no reallocation)."""
    trainer = trained(tmp_path)
    store, cache = trainer.model.store, trainer.model.cache
    memory, state = trainer.model.memory_state_dict(), {k: v.clone() for k, v in trainer.state.items()}
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.evaluate_all()
    assert trainer.model.store is store and trainer.model.cache is cache
    assert_same_memory(memory, trainer.model.memory_state_dict())
    assert all(torch.equal(state[k], trainer.state[k]) for k in state)
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    assert len(store) > 0


def test_every_task_is_evaluated_from_the_memory_training_left(tmp_path, monkeypatch):
    """The memory each task's evaluation starts from is the one before the first (the evaluation of a task writes
    memories: its facts); a single task's evaluation likewise."""
    trainer = trained(tmp_path)
    before, starts = trainer.model.memory_state_dict(), []
    evaluate = trainer._evaluate

    def recorded(task):
        starts.append(trainer.model.memory_state_dict())
        return evaluate(task)
    monkeypatch.setattr(trainer, "_evaluate", recorded)
    trainer.evaluate_all()
    trainer.evaluate_task(1)
    assert len(starts) == trainer.num_tasks + 1
    for start in starts:
        assert_same_memory(before, start)
    with trainer.model.memory_undo():  # an evaluation writes memories: the undo had work to do
        evaluate(0)
        assert trainer.model.store.state_dict()["adds"] > before["store"]["adds"]


def test_an_evaluation_that_fails_still_leaves_the_memory_as_it_was(tmp_path, monkeypatch):
    trainer = trained(tmp_path)
    before = trainer.model.memory_state_dict()
    evaluate = trainer._evaluate

    def fails_at_the_second_task(task):
        evaluate(task)
        if task == 1:
            raise FloatingPointError("diverged")
        return 1.0
    monkeypatch.setattr(trainer, "_evaluate", fails_at_the_second_task)
    with pytest.raises(FloatingPointError):
        trainer.evaluate_all()
    assert_same_memory(before, trainer.model.memory_state_dict())
    trainer.model.store.mark()  # the marks were released: a new one opens
    trainer.model.store.release()


@pytest.mark.parametrize("agent, extra", [("transformer", ()), ("lstm", ()), ("memnet", ("memory.store=false",))])
def test_models_without_a_store_evaluate_as_before(tmp_path, agent, extra):
    trainer = trained(tmp_path, agent, *extra)
    with trainer.model.memory_undo() as undo:
        undo()
    assert trainer.model.memory_state_dict() == {}
    assert set(trainer.evaluate_all()) == set(range(trainer.num_tasks))


def test_memory_objects_made_inside_an_undo_are_dropped_by_it(tmp_path):
    """MemNet makes its store and cache at the first forward when not made before: an undo from before that drops
    them (the memory was empty), as loading the empty snapshot did."""
    trainer = trained(tmp_path)
    model = trainer.model
    model.close()
    with model.memory_undo() as undo:
        model.allocate_memory(2)
        assert model.store is not None
        undo()
        assert model.store is None
        model.allocate_memory(2)
    assert model.store is None and model.memory_state_dict() == {}


def test_memory_undo_nests(tmp_path):
    """An evaluation inside a caller's own memory_undo: the inner one takes a snapshot (a store holds one mark at a
    time), and each undo goes back to its own entry."""
    trainer = trained(tmp_path)
    model, before = trainer.model, trainer.model.memory_state_dict()
    with model.memory_undo() as outer:
        trainer._evaluate(0)
        middle = model.memory_state_dict()
        trainer.evaluate_all()  # its own memory_undo, inside this one
        assert_same_memory(middle, model.memory_state_dict())
        outer()
        assert_same_memory(before, model.memory_state_dict())
        trainer._evaluate(1)
    assert_same_memory(before, model.memory_state_dict())
    assert not model.store.marked and not model.cache.marked
