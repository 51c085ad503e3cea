"""The scripts under benchmarks/ loaded and run in the test's own process (tests/test_benchmark_*.py): a Python
process per call costs seconds of imports (torch, FAISS, gymnasium), which made tests/test_benchmark_scripts.py the
slowest file of the suite; the scripts' own process (exit code, signals, output) keeps a few tests of its own."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import faiss
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache
def load_script(name: str):
    """benchmarks/<name>.py as a module named benchmarks_<name> (benchmarks/ is no package, and putting it on
    sys.path would let benchmarks/memory.py shadow the memory package); loaded once per process."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name: str, args: list[str], monkeypatch) -> int:
    """benchmarks/<name>.py's main() with `args` as its command line, as its process would run it: its exit code
    (SystemExit's, or what main returned). What main sets for its process (torch's and FAISS's thread counts, the
    OpenMP wait settings in os.environ) is put back afterwards, for the tests that run after it in this worker."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    environ, threads, faiss_threads = dict(os.environ), torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        return load_script(name).main() or 0
    except SystemExit as exc:
        return exc.code
    finally:
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)


def refused(name: str, args: list[str], monkeypatch, capsys) -> tuple[str, str]:
    """benchmarks/<name>.py's stdout and stderr for `args`, which it must refuse with its usage line (exit 2); an
    exception other than SystemExit fails the test with its traceback (a script's process printed it)."""
    code = run_main(name, args, monkeypatch)
    out, err = capsys.readouterr()
    if code != 2:
        pytest.fail(f"{name}.py {' '.join(args)}: exit {code}, not 2 (a usage line)\n{err}")
    return out, err
