"""Every Python block of README.md runs as a user would paste it (from a folder holding a `runs/` of one run), and
the numbers it states in its comments are what it gives."""

import re
from pathlib import Path

import pytest

from agents import run
from tests.test_run import tiny

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A working folder with one finished run under runs/, as after `python -m agents.run` (block: read a run)."""
    folder = tmp_path_factory.mktemp("user")
    stamp = "2026-01-01_00-00-00_s0"
    assert run.main(tiny("ContinualShift-v0", "memnet", folder / "runs/ContinualShift-v0/memnet" / stamp)) == 0
    return folder


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[b.splitlines()[0][:40] for b in BLOCKS])
def test_each_python_block_runs(index, user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)  # noqa: S102


def test_the_metrics_block_gives_the_numbers_its_comments_state(user_folder, monkeypatch):
    block = next(b for b in BLOCKS if "continual_metrics(" in b)
    namespace: dict = {}
    exec(block.replace("continual_metrics([", "result = continual_metrics([")
         .replace("bootstrap_ci([", "ci = bootstrap_ci(["), namespace)  # noqa: S102
    result, ci = namespace["result"], namespace["ci"]
    assert result["ACC"] == pytest.approx(0.5) and result["BWT"] == pytest.approx(-0.15)
    assert result["FWT"] == pytest.approx(0.1) and result["forgetting"] == pytest.approx(0.3)
    assert [round(v, 3) for v in ci] == [0.572, 0.526, 0.618]


def test_the_readme_states_the_torch_minimum_that_pyproject_asks_for():
    """The README said torch>=2.2 after pyproject.toml had moved to 2.6 (fused AdamW on the CPU, get_total_norm)."""
    pyproject = (README.parent / "pyproject.toml").read_text()
    (minimum,) = re.findall(r'"torch>=([0-9.]+)"', pyproject)
    assert re.findall(r"`torch>=([0-9.]+)`", README.read_text()) == [minimum]
