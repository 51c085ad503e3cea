"""benchmarks/memory.py: sizes too small for what it measures are one argparse line, not a traceback mid-run."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_memory", SCRIPT)  # benchmarks/ is no package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, message", [
    (["--only", "exact", "--entries", "5"], "--entries: must be at least 8"),  # top-8 search (was a torch error)
    (["--only", "cache", "--cache-entries", "50"], "--cache-entries: must be at least 100"),  # 100-id batches
])
def test_sizes_below_what_a_measure_needs_are_one_line(args, message, monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(sys, "argv", ["memory.py", "--repeats", "1", "--cache-repeats", "1", *args])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exc:
            script.main()
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide thread count
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_smallest_sizes_run(monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(sys, "argv", ["memory.py", "--entries", "8", "--cache-entries", "100", "--repeats", "1",
                                      "--cache-repeats", "1", "--only", "exact"])
    threads = torch.get_num_threads()
    try:
        script.main()
    finally:
        torch.set_num_threads(threads)
    assert "| exact search, 64 queries top-8 (FaissStore) |" in capsys.readouterr().out
