"""`python -m agents.benchmark_report DIR`: write a finished benchmark's results.md, results.json and plots/*.png
again from DIR/results.json (every run's record, the settings and the chance margin are kept there), with the
report code as it is now. No run is started again; each run's own folder is left as it is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

USAGE = ("usage: python -m agents.benchmark_report DIR   (DIR: the out= folder of a python -m agents.benchmark, "
         "with its results.json)")
CONTEXT = ("suite", "command", "machine", "started", "wall_s", "workers")  # what results.md's header reads


def load(bench_dir: Path) -> tuple[list[dict], dict, float]:
    """(run records, context, chance margin) from bench_dir/results.json; ValueError in words on anything else."""
    path = bench_dir / "results.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; give the out= folder of a python -m agents.benchmark") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc}); it was cut short or is not a benchmark's") from None
    missing = [k for k in ("runs", *CONTEXT) if k not in saved] if isinstance(saved, dict) else ["runs"]
    if missing or not isinstance(saved["runs"], list):
        raise ValueError(f"{path} is not a benchmark's results.json (no {', '.join(missing) or 'list of runs'})")
    context = {k: v for k, v in saved.items() if k not in ("runs", "aggregate", "targets", "capacity",
                                                            "chance_margin")}
    return saved["runs"], context, saved.get("chance_margin", 0.05)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__.strip()}")
        return 0
    if len(argv) != 1:
        print(f"error: give one folder, got {len(argv)} arguments; {USAGE}", file=sys.stderr)
        return 2
    if argv[0].startswith("-") or argv[0].startswith("out=") and not Path(argv[0]).exists():  # were read as a
        # folder: "--bogus/results.json does not exist"
        print(f"error: {argv[0]!r} is not an argument of agents.benchmark_report; it takes the folder alone; "
              f"{USAGE}", file=sys.stderr)
        return 2
    from agents import benchmark_report as report
    from agents.benchmark_plots import write_plots
    from agents.cli_args import counted
    from agents.config_messages import error_line

    bench_dir = Path(argv[0])
    try:
        records, context, margin = load(bench_dir)
        agg, targets, _ = report.write_results(bench_dir, records, context, margin)
        plots = write_plots(bench_dir / "plots", agg, records)
    except ValueError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except (OSError, KeyError, TypeError) as exc:  # a folder we may not write; a record from another version
        print(error_line(f"cannot rebuild the results in {bench_dir} ({type(exc).__name__}: {exc})"), file=sys.stderr)
        return 1
    missed, runs = sum(t["status"] == report.MISSED for t in targets), len(records)
    print(f"{bench_dir / 'results.md'}, results.json, {counted(len(plots), 'plot')} written again from "
          f"{counted(runs, 'run')} ({counted(len(targets), 'target')}, {missed} MISSED)")
    return 0
