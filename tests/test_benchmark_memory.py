"""benchmarks/memory.py: sizes too small for what it measures are one argparse line, not a traceback mid-run."""

import pytest

from tests.scripts import refused, run_main


@pytest.mark.parametrize("args, message", [
    (["--only", "exact", "--entries", "5"], "--entries: must be at least 8"),  # top-8 search (was a torch error)
    (["--only", "cache", "--cache-entries", "50"], "--cache-entries: must be at least 100"),  # 100-id batches
])
def test_sizes_below_what_a_measure_needs_are_one_line(args, message, monkeypatch, capsys):
    _, err = refused("memory", ["--repeats", "1", "--cache-repeats", "1", *args], monkeypatch, capsys)
    assert message in err, err


def test_the_smallest_sizes_run(monkeypatch, capsys):
    assert run_main("memory", ["--entries", "8", "--cache-entries", "100", "--repeats", "1", "--cache-repeats", "1",
                               "--only", "exact"], monkeypatch) == 0
    assert "| exact search, 64 queries top-8 (FaissStore) |" in capsys.readouterr().out


def test_the_undo_section_compares_a_whole_snapshot_with_a_mark(monkeypatch, capsys):
    """Its sizes are the main command's (fixed); what each way holds is bytes, not a timing: the mark keeps the
    bookkeeping and the rows written, the snapshot every entry and the cold tier's data."""
    import re

    assert run_main("memory", ["--only", "undo", "--repeats", "1"], monkeypatch) == 0
    out = capsys.readouterr().out
    held = {name: float(mib) for name, mib in re.findall(r"\| a (whole snapshot|mark) .*holds ([\d.]+) MiB", out)}
    assert set(held) == {"whole snapshot", "mark"} and held["mark"] < held["whole snapshot"] / 4, out
