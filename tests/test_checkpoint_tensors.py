"""A checkpoint whose optimizer state or per-lane state loads but is garbled is the one line that names the tensor,
for `agents.run resume=` and `agents.evaluate checkpoint=`, with the run folder untouched. An exp_avg of another
shape ended a resumed run with a segmentation fault (fused AdamW), a NaN moment or step read as "training diverged;
lower train.lr", a float64 slot bank, a token id beyond the vocabulary or a negative clock were tracebacks from the
first forward, and a NaN internal memory was evaluated without a word."""

import pytest
import torch

from agents import evaluate, run
from tests.test_checkpoint_fields import LINE, garbled_copy, refused_by_both_commands
from tests.test_run import tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished MemNet run (slot bank, store, LM2 internal memory) and its checkpoint's body."""
    run_dir = tmp_path_factory.mktemp("checkpoint_tensors") / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1", "memory.internal=lm2",
                         "memory.internal_slots=4")) == 0
    return run_dir, torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _moment(key, edit):
    def damage(body):
        state = body["optimizer"]["state"][0]
        state[key] = edit(state[key])
    return damage


def _group(key, value):
    def damage(body):
        body["optimizer"]["param_groups"][0][key] = value
    return damage


def _lane(name, edit):
    def damage(body):
        body["state"][name] = edit(body["state"][name])
    return damage


def _nan(t):
    return torch.full_like(t, float("nan"))


def _store_token(value):
    def damage(body):
        store = body["memory"]["store"]
        store["meta"][store["row_id"] >= 0, 6] = value  # META_FIELDS: lane, episode, position, step, task, time, token
    return damage


# case -> (how the checkpoint is garbled, what the line names)
CASES = {
    "exp_avg of another shape": (_moment("exp_avg", lambda t: t.flatten()[:1].clone()),
                                 "optimizer state exp_avg of embed.weight is float32 (1,), the parameter float32"),
    "exp_avg_sq NaN": (_moment("exp_avg_sq", _nan), "optimizer state exp_avg_sq of embed.weight holds NaN or inf"),
    "exp_avg_sq negative": (_moment("exp_avg_sq", lambda t: t - 1), "holds negative values (a mean of squares)"),
    "step negative": (_moment("step", lambda t: torch.tensor(-5.0)), "optimizer state step of embed.weight: -5.0"),
    "step slightly negative": (_moment("step", lambda t: torch.tensor(-0.5)),
                               "optimizer state step of embed.weight: -0.5"),
    "step NaN": (_moment("step", lambda t: torch.tensor(float("nan"))), "optimizer state step of embed.weight: nan"),
    "lr NaN": (_group("lr", float("nan")), "optimizer lr=nan"),
    "beta of 1": (_group("betas", (0.9, 1.0)), "optimizer betas=(0.9, 1.0)"),
    "slot bank float64": (_lane("slot.memory", lambda t: t.double()), "per-lane state slot.memory is float64"),
    "slot bank NaN": (_lane("slot.memory", _nan), "per-lane state slot.memory holds NaN or inf"),
    "internal memory NaN": (_lane("internal", _nan), "per-lane state internal holds NaN or inf"),
    "internal memory float16": (_lane("internal", lambda t: t.half()), "per-lane state internal is float16"),
    "slot written int64": (_lane("slot.written", lambda t: t.long()), "per-lane state slot.written is int64"),
    "window token beyond the vocabulary": (_lane("window.tokens", lambda t: t + 10**6),
                                           "per-lane state window.tokens holds token 1000"),
    "window token at the vocabulary size": (_lane("window.tokens", lambda t: torch.full_like(t, 256)),
                                            "window.tokens holds token 256, this env's vocabulary has 256"),
    "negative clock": (_lane("ctrl.pos", lambda t: t - 10**6), "per-lane state ctrl.pos holds -"),
    "buffer end past the buffer": (_lane("ctrl.end", lambda t: t + 10**6), "per-lane state ctrl.end="),
    "buffer mark before the buffer": (_lane("ctrl.mark", lambda t: t * 0),
                                      "per-lane state ctrl.mark=[0] is outside the window buffer [15, 47]"),
    "stored token beyond the vocabulary": (_store_token(10**6), "the store's entries hold token ids outside [0, "),
    "stored token negative": (_store_token(-2), "the store's entries hold token ids outside [0, "),
    # was "the run does not fit in memory (an allocation of 22.4 TiB failed) ...; lower train.lanes"
    "memory of 10^9 lanes": (lambda body: body["memory"].update(lanes=10**9),
                             "its memory state holds 1000000000 lanes, the run "),
    "memory dropped": (lambda body: body.update(memory={}), "its memory state is empty, and this run's model has a"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_garbled_tensor_is_one_line_naming_it(finished, tmp_path, capsys, case):
    damage, names = CASES[case]
    refused_by_both_commands(capsys, garbled_copy(finished, tmp_path, damage, part=None), LINE, names)


def test_an_untrained_runs_empty_memory_state_still_loads(tmp_path, capsys):
    """Before 2026-12-01 MemNet made its store at the first forward, so a run with train.episodes=0 saved no memory
    state: such a checkpoint resumes and evaluates (an empty memory state of a trained run is refused above)."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=0")) == 0
    body = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert body["trainer"]["train_steps"] == 0 and body["memory"]
    torch.save({**body, "memory": {}}, run_dir / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={run_dir}", "out=again.json"]) == 0, capsys.readouterr().err
    assert run.main([f"resume={run_dir}"]) == 0, capsys.readouterr().err


def test_a_symlink_loop_is_one_line_for_both_commands(tmp_path, capsys):
    """Path.resolve() of a symlink loop was a RuntimeError traceback (exit 1); on Python 3.13 it returns the loop as it
    is, which read "no checkpoint at '.../loop'" (a loop inside the path too) until the strict resolve named it."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for given in (loop, loop / "checkpoints" / "last.pt"):
        for main, key in ((run.main, "resume"), (evaluate.main, "checkpoint")):
            capsys.readouterr()
            assert main([f"{key}={given}"]) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"error: '{given}' cannot be resolved (")
            assert "Symlink loop from" in err or "Too many levels of symbolic links" in err  # 3.10-3.12, 3.13
            assert err.endswith("; name the run folder itself") and len(err.splitlines()) == 1
