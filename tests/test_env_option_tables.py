"""Each env's options, as its class docstring's `## Arguments` table and the README's table list them, are the options
its stream source takes, with the defaults it has: an option added, renamed or given another default in the code
and not in its two tables misled the readers of both (the env docstring is the spec, as Gymnasium's are)."""

from __future__ import annotations

import inspect
import re

import pytest

from envs.continual_shift import ContinualShiftEnv, ContinualShiftSource
from envs.long_dependency import LongDependencyEnv, LongDependencySource
from envs.needle_recall import NeedleRecallEnv, NeedleRecallSource
from tests.repo_env import REPO

ENVS = {"LongDependency-v0": (LongDependencySource, LongDependencyEnv),
        "ContinualShift-v0": (ContinualShiftSource, ContinualShiftEnv),
        "NeedleRecall-v0": (NeedleRecallSource, NeedleRecallEnv)}


def defaults(source) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(source.__init__).parameters.items() if name != "self"}


def rows(lines: list[str], cell_split: str) -> dict[str, str]:
    """option -> default text of the first `| option | default | meaning |` table in `lines`; a row of several
    options ('a, b' or 'a / b', defaults alike) split into one per option."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("| option | default |"))
    out = {}
    for line in lines[start + 2:]:
        if not line.strip().startswith("|"):
            break
        names, default = (c.strip() for c in line.strip().strip("|").split(" | ")[:2])
        names = [n.strip("` ") for n in re.split(cell_split, names)]
        values = [v.strip() for v in re.split(cell_split, default)] if len(names) > 1 else [default]
        out.update(zip(names, values, strict=True))
    return out


def readme_rows(env_id: str) -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n### {env_id}", 1)[1].split("\n### ", 1)[0]
    return rows(section.splitlines(), r", ")


def docstring_rows(env_cls) -> dict[str, str]:
    doc = inspect.getdoc(env_cls)
    return rows(doc.split("## Arguments", 1)[1].splitlines(), r" / ")


def matches(text: str, default) -> bool:
    """Whether a table's default text states `default`; a text that is no literal (`min(5, episodes_per_task)`)
    describes None's meaning, and a grid with '...' (`1, 2, 4, ..., 1024`) states its first terms and its last."""
    text = text.strip("`() ").strip('"')
    if "..." in text:
        shown = [int(n) for n in re.findall(r"\d+", text)]
        return isinstance(default, tuple) and list(default[:len(shown) - 1]) == shown[:-1] and default[-1] == shown[-1]
    if default is None:
        return text == "None" or not re.fullmatch(r"[\w.\-]+", text)
    if isinstance(default, bool):
        return text.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(text) == default
        except ValueError:
            return False
    return text == str(default)


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("where", ["README", "docstring"])
def test_each_table_lists_the_source_s_options_with_its_defaults(env_id, where):
    source, env_cls = ENVS[env_id]
    table = readme_rows(env_id) if where == "README" else docstring_rows(env_cls)
    want = defaults(source)
    assert set(table) == set(want), f"{env_id} {where}: listed {sorted(set(table) - set(want))}, " \
                                    f"missing {sorted(set(want) - set(table))}"
    wrong = {name: (table[name], want[name]) for name in want if not matches(table[name], want[name])}
    assert not wrong, f"{env_id} {where}: stated default vs the code's: {wrong}"


def test_the_comparison_can_fail():  # what the tables would say after a change of default
    assert not matches("16", 32) and not matches("False", True) and not matches("1, 2, 4, ..., 2048", (1, 2, 4, 1024))
    assert not matches('"abrupt"', "gradual") and matches("min(5, episodes_per_task)", None)
