"""The README's two tables of `python -m agents.run` keys state each key's default as the run config has it: the
value for every env and agent, or per env in parentheses (`0 (LongDependency 0.5, ContinualShift 0.9)`: 0 on the
env not named; `true (NeedleRecall, ContinualShift: false)`; `hidden (token in every env config)`) or per agent
(`3e-3 (MemNet 1e-3)`). A default changed in a config file and not here misled every reader of the table."""

from __future__ import annotations

import math
import re

import pytest
from omegaconf import OmegaConf

from agents.config import load_config
from tests.repo_env import REPO

ENVS = {"LongDependency": "LongDependency-v0", "ContinualShift": "ContinualShift-v0", "NeedleRecall": "NeedleRecall-v0"}
AGENTS = {"MemNet": "memnet"}
NOT_A_VALUE = ("per env",)  # train.episodes: each env's schedule


def tables() -> list[tuple[str, str]]:
    """(key, default cell) of every row of the README's `| key | default | meaning |` tables, a row of several keys
    split into one per key (`memory.util_weight`, `pressure_weight`: the second one's section is the first's)."""
    lines, rows = (REPO / "README.md").read_text().splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("| key | default |"):
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                keys_cell, default = (c.strip() for c in row.strip("|").split(" | ")[:2])
                keys = re.findall(r"`([\w.]+)`", keys_cell)
                section = keys[0].rpartition(".")[0]
                keys = [k if "." in k or not section else f"{section}.{k}" for k in keys]
                values = split_top(default) if len(keys) > 1 else [default]
                rows += zip(keys, values if len(values) == len(keys) else values * len(keys), strict=True)
    return rows


def split_top(text: str) -> list[str]:
    """'3e-3 (MemNet 1e-3), 1.0, 0' -> ['3e-3 (MemNet 1e-3)', '1.0', '0']: commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def value(text: str):
    text = text.strip().strip('"')
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def expected(key: str, cell: str) -> dict[tuple[str, str], object]:
    """(env id, agent) -> the default a cell states for it: for MemNet and the transformer, except the memory.* keys
    of MemNet's own table (the transformer is MemNet with memory.slots=0, store=false, internal=none)."""
    main, _, extra = cell.partition(" (")
    extra = extra.rstrip(")")
    agents = ("memnet",) if key.startswith("memory.") and key != "memory.reset" else ("memnet", "transformer")
    out = {(env, agent): value(main) for env in ENVS.values() for agent in agents}
    if m := re.fullmatch(r"(\S+) in every env config", extra):
        return dict.fromkeys(out, value(m.group(1)))
    if ": " in extra:  # 'NeedleRecall, ContinualShift: false'
        names, v = extra.split(": ")
        pairs = [(name, v) for name in names.split(", ")]
    else:  # 'LongDependency 0.5, ContinualShift 0.9' / 'MemNet 1e-3'
        pairs = [tuple(p.split(" ", 1)) for p in split_top(extra)] if extra else []
    for name, v in pairs:
        for env, agent in out:
            if ENVS.get(name) == env or AGENTS.get(name) == agent:
                out[env, agent] = value(v)
    return out


ROWS = [(key, cell) for key, cell in tables() if cell not in NOT_A_VALUE]


def test_the_tables_are_read():
    keys = [key for key, _ in ROWS]
    assert {"train.lanes", "train.weight_decay", "memory.sparsity_weight", "model.heads", "memory.key_lags"} \
        <= set(keys)
    assert len(keys) == len(set(keys)) > 30


@pytest.mark.parametrize("key, cell", ROWS, ids=[key for key, _ in ROWS])
def test_each_stated_default_is_the_run_config_s(key, cell):
    if key in ("env", "agent"):  # the default command's: no env= / agent= given
        assert OmegaConf.select(load_config([]), f"{key}.{'id' if key == 'env' else 'name'}") == value(cell)
        return
    for (env, agent), want in expected(key, cell).items():
        got = OmegaConf.select(load_config([f"env={env}", f"agent={agent}"]), key)
        if isinstance(want, float) or isinstance(got, float):
            assert math.isclose(float(got), float(want)), (key, env, agent, got, want)
        else:
            assert got == want, (key, env, agent, got, want)
