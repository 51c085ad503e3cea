"""Found by a random sweep of edge configurations (agents.run end to end), 2026-12-03: combinations a user can set
that were refused though the documented settings allow them."""

import json

import pytest

from agents import run
from agents.config import ConfigError, load_config
from tests.test_run import tiny

# a width that memory.read_heads=4 and memory.attn_heads=4 do not divide; dim // heads even (rotary pairs)
ODD_WIDTH = ["model.dim=18", "model.heads=1", "memory.read_heads=4", "memory.attn_heads=4"]


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
@pytest.mark.parametrize("part", ["memory.slots=64", "memory.store=true", "memory.internal=lm2"])
def test_a_baseline_given_a_memory_part_takes_a_width_that_part_s_heads_do_not_divide(agent, part, tmp_path, capsys):
    """A baseline builds no memory part, and its memory.* change nothing (the run's note says so; a sweep or a suite
    passes them to every agent): `agent=lstm memory.slots=64 model.dim=18 model.heads=1` was refused with
    `memory.read_heads=4: must ... divide model.dim=18`, memory.store=true with attn_heads likewise (the fix for
    the baselines' own config, which sets the parts off, missed a part turned on on the command line)."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", agent, run_dir, *ODD_WIDTH, part)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"note: agent={agent} has no memory; " in out and part.split("=")[0] in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["agent"] == agent and 0.0 <= metrics["ACC"] <= 1.0
    assert "model:\n  dim: 18\n" in (run_dir / "config.yaml").read_text()


def test_memnet_still_refuses_a_width_its_memory_part_s_heads_do_not_divide():
    with pytest.raises(ConfigError, match=r"^memory.read_heads=4: must be >= 1 and divide model.dim=18 "):
        load_config(["agent=memnet", *ODD_WIDTH, "memory.slots=64"])
    with pytest.raises(ConfigError, match=r"^memory.attn_heads=4: must divide model.dim=18$"):
        load_config(["agent=memnet", *ODD_WIDTH, "memory.slots=0", "memory.store=true"])
    cfg = load_config(["agent=lstm", *ODD_WIDTH, "memory.slots=64"])  # the config keeps what was given
    assert (cfg.memory.slots, cfg.memory.read_heads, cfg.model.dim) == (64, 4, 18)
