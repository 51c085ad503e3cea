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


def heading_anchors(text: str) -> list[tuple[int, str]]:
    """(level, anchor) of each Markdown heading outside code blocks, anchored as GitHub does: lower case, every
    character but letters, digits, `_`, `-` and spaces dropped, spaces as `-`, a repeated anchor suffixed -1, -2."""
    out, seen, fenced = [], {}, False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        m = None if fenced else re.match(r"(#{1,6}) (.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m[2].strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.append((len(m[1]), slug if n == 0 else f"{slug}-{n}"))
    return out


def test_the_contents_list_every_section_and_every_link_finds_its_heading():
    """The Contents list links each ## and ### heading in order (a new section is listed), and every `(#anchor)` link
    in the README leads to a heading (a renamed heading breaks none silently)."""
    text = README.read_text()
    headings = heading_anchors(text)
    assert len(headings) > 30
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    assert listed == [a for level, a in headings if level in (2, 3) and a != "contents"]
    anchors = {a for _, a in headings}
    assert [a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors] == []
