"""Every `python -m` / script entry point runs its main only after the whole module is defined.

`agents/tune.py` called main() above a helper it defined later: under `python -m` a sweep whose metric was never
measured ended in `NameError: name '_never_measured' is not defined` (tests import the module whole, so they
never saw it). The guard must be the module's last statement."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for folder in ("agents", "envs", "memory", "benchmarks") for p in (REPO / folder).glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text())


def is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def test_there_are_entry_points():
    names = {p.name for p in SCRIPTS}
    assert {"run.py", "evaluate.py", "tune.py", "benchmark.py", "agents.py"} <= names, names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_main_guard_that_runs_main_is_the_last_statement(path):
    body = ast.parse(path.read_text()).body
    guards = [i for i, node in enumerate(body) if is_main_guard(node)]
    calls = [i for i in guards if "main(" in ast.unparse(body[i])]  # (run.py's first guard installs a handler)
    assert calls == [len(body) - 1], f"{path.name}: its main() runs before statements {calls[0] + 1 if calls else 0}.."
