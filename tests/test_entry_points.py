"""Every `python -m` / script entry point runs its main only after the whole module is defined.

`agents/tune.py` called main() above a helper it defined later: under `python -m` a sweep whose metric was never
measured ended in `NameError: name '_never_measured' is not defined` (tests import the module whole, so they
never saw it). The guard must be the module's last statement. The startup guard (agents.startup) must come before the
imports that load torch: it sets how torch's threads wait."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.startup import WAIT_SETTINGS
from tests.repo_env import REPO, repo_env

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
    calls = [i for i in guards if "main(" in ast.unparse(body[i]) or "(main)" in ast.unparse(body[i])]
    # (run.py's first guard installs a handler; run_script(main) runs it too)
    assert calls == [len(body) - 1], f"{path.name}: its main() runs before statements {calls[0] + 1 if calls else 0}.."


STARTED = ["agents/run.py", "agents/evaluate.py", "agents/tune.py", "agents/benchmark.py"]  # guard_startup's callers


@pytest.mark.parametrize("name", STARTED)
def test_the_startup_guard_comes_before_the_imports_that_load_torch(name):
    """GOMP_SPINCOUNT (agents.startup.threads_spin_briefly) is read once, when torch loads OpenMP."""
    body = ast.parse((REPO / name).read_text()).body
    guard = next(i for i, node in enumerate(body) if is_main_guard(node) and "guard_startup(" in ast.unparse(node))
    imports = [i for i, node in enumerate(body) if isinstance(node, (ast.Import, ast.ImportFrom))
               and getattr(node, "module", None) not in ("__future__", "agents.startup")]
    assert guard < imports[0], f"{name}: an import comes before guard_startup"


def test_torch_threads_spin_briefly_when_they_wait_unless_the_user_chose(monkeypatch):
    from agents.startup import threads_spin_briefly

    for name in WAIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    threads_spin_briefly()
    assert (os.environ["GOMP_SPINCOUNT"], os.environ["KMP_BLOCKTIME"]) == ("3000", "0")
    assert "OMP_WAIT_POLICY" not in os.environ  # it would set libgomp's spin count itself (PASSIVE: 0)


@pytest.mark.parametrize("name, value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "INFINITE"),
                                         ("KMP_BLOCKTIME", "200")])
def test_a_users_own_thread_wait_setting_stays_alone(monkeypatch, name, value):
    """Any one of them set: nothing is added (GOMP_SPINCOUNT would override a user's OMP_WAIT_POLICY)."""
    from agents.startup import threads_spin_briefly

    for other in WAIT_SETTINGS:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    threads_spin_briefly()
    assert {k: os.environ[k] for k in WAIT_SETTINGS if k in os.environ} == {name: value}


def test_the_wait_setting_named_in_a_measurements_header_is_the_one_in_force(monkeypatch):
    from agents.startup import thread_wait_setting, threads_spin_briefly

    for name in WAIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert thread_wait_setting() == "OpenMP's default wait"
    threads_spin_briefly()
    assert thread_wait_setting() == "GOMP_SPINCOUNT=3000, KMP_BLOCKTIME=0"
    for name in WAIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    threads_spin_briefly()
    assert thread_wait_setting() == "OMP_WAIT_POLICY=PASSIVE"


def test_an_entry_point_computes_with_briefly_spinning_threads(tmp_path):
    """Through the real startup of `python -m agents.run` (its --help loads no torch, so read what it set)."""
    code = ("import runpy, sys, os; sys.argv = ['agents.run', '--help']\n"
            "try:\n    runpy.run_module('agents.run', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in WAIT_SETTINGS}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "3000 None", done.stderr


@pytest.mark.parametrize("module", ["agents.run", "agents.evaluate", "agents.tune", "agents.benchmark"])
def test_output_piped_into_a_reader_that_stops_is_no_error(module):
    """`python -m agents.run --help | head -2` (or a run piped into `head -1`): the reader closes the pipe, and the
    next write raised BrokenPipeError, a traceback and exit 1 (for a run, after its training or in the middle)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr


def test_a_closed_pipe_sends_later_output_to_devnull():
    from agents.startup import ClosedPipeSafe

    read, write = os.pipe()
    stream = ClosedPipeSafe(os.fdopen(write, "w", buffering=1))
    assert stream.write("seen\n") == 5 and os.read(read, 5) == b"seen\n"
    os.close(read)
    assert stream.write("lost\n") == 5  # BrokenPipeError inside, the descriptor now /dev/null
    stream.write("x" * 100_000)
    stream.flush()
    assert stream.fileno() == write and not stream.isatty()  # the rest is the wrapped stream's
    stream.close()


@pytest.mark.parametrize("module", ["memory.config", "agents.config", "agents.cli_args", "envs", "agents.benchmark",
                                    "agents.evaluate_args", "agents.checkpoint_paths", "agents.threads"])
def test_the_config_and_its_checks_import_no_torch(module):
    """A command line is checked against `agents.config` (and a MemoryConfig) before anything is trained. At module
    level `memory/__init__.py` imported every component and `agents.cli_args` the memory metrics, so those checks
    imported torch: `benchmarks/envs.py --repeats 0`, which needs no torch, took 4 s to print its usage line. The
    benchmark plans every run (each run's config composed and checked) before torch loads: a bad line took ~5 s."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'faiss', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr or done.stdout


def test_the_memory_package_still_exports_its_components():
    import memory

    assert set(memory.__all__) <= set(dir(memory))
    for name in memory.__all__:
        assert getattr(memory, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'FaissStor'"):
        memory.FaissStor  # noqa: B018


@pytest.mark.parametrize("argv, code, line", [
    (["train.lane=3"], 2, "error: unknown config key 'train.lane'; did you mean 'train.lanes'?"),
    (["memory.slots=-1"], 2, "error: memory.slots=-1: must be >= 0 (0 switches the slot bank off)"),
    (["env.kwargs.num_task=3"], 2, "error: unknown config key 'env.kwargs.num_task': ContinualShift-v0 has no option"),
    (["config=nowhere.yaml"], 2, "error: config=nowhere.yaml: no such file"),
    # resume=null is the schema's "no resume" (--help's spelling): a fresh run's line, answered early too
    (["resume=null", "memory.slot=3"], 2, "error: unknown config key 'memory.slot'; did you mean 'memory.slots'?"),
    (["--help"], 0, None),
    # was a ConfigError traceback (exit 1) from the early answer, which main() had caught
    (["--help", "memory.slot=3"], 2, "error: unknown config key 'memory.slot'; did you mean 'memory.slots'?"),
])
def test_a_bad_command_line_and_help_are_answered_before_torch_loads(argv, code, line):
    """`python -m agents.run` refused a mistyped key only after loading torch and matplotlib (~6 s on 2 cores; now
    ~1 s): agents.run_config.early_answer answers while the command starts, with main()'s own line."""
    check_answered_early("agents.run", argv, code, line)


def check_answered_early(module: str, argv: list[str], code: int, line: str | None, cwd: Path = REPO) -> None:
    """`python -m <module> <argv>` exits with `code` and `line` (None: its usage on stdout) without importing torch."""
    program = (f"import runpy, sys; sys.argv = [{module!r}, *{argv!r}]\n"
               f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
               "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules, file=sys.stderr)")
    env = repo_env()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"exit {code} False", done.stderr
    if line is not None:
        assert len(lines) == 2 and lines[0].startswith(line), done.stderr
    else:
        assert done.stdout.startswith(f"usage: python -m {module}"), done.stdout


@pytest.mark.parametrize("argv, code, line", [
    (["--help"], 0, None),
    ([], 2, "error: checkpoint= is missing; name the run to evaluate"),
    (["chekpoint=run"], 2, "error: 'chekpoint=run' is not an argument of agents.evaluate"),
    (["checkpoint=nowhere"], 2, "error: no checkpoint at "),
    (["checkpoint=run", "out=metrics.json"], 2, "error: out='"),
    (["checkpoint=run", "memory.slots=3"], 2, "error: memory.slots: the trained weights and saved memory were made"),
    (["checkpoint=run", "env.kwargs.facts_per_episode=[1,"], 2, "error: env.kwargs.facts_per_episode=[1,: no viable"),
    (["checkpoint=run", "env.kwargs.x=range(1,100000000)"], 2, "error: env.kwargs.x=range(1,100000000): 10,001+ "),
    (["checkpoint=run", "threads=two"], 2, "error: threads=two: not an integer"),
    (["checkpoint=run", "threads=0"], 2, "error: threads=0: give a torch thread count in [1, 1024]"),  # was ~8 s in
])
def test_evaluate_answers_a_bad_command_line_and_help_before_torch_loads(tmp_path, argv, code, line):
    """`python -m agents.evaluate` refused a mistyped argument, a missing checkpoint or an out= that names the run's
    own file after ~5 s of imports; agents.evaluate_args.early_answer answers in ~1 s, with main()'s own line. (The
    checkpoint is only looked for here: reading it needs torch.)"""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"not read while the command starts")
    check_answered_early("agents.evaluate", argv, code, line, cwd=tmp_path)


def test_the_early_answer_reads_a_config_file_once(tmp_path, capsys):
    """A valid line's config, made while the command starts, is the one main() runs: `config=/dev/stdin` (a pipe)
    was read empty the second time and refused ("holds no mapping of keys"), an edit in between took effect."""
    from agents import run
    from agents.run_config import early_answer
    from tests.test_run import TINY_MODEL

    saved = tmp_path / "saved.yaml"
    assert run.main([*TINY_MODEL, "env=LongDependency-v0", "agent=lstm", "train.episodes=0",
                     f"run_dir={tmp_path / 'first'}"]) == 0
    saved.write_text((tmp_path / "first" / "config.yaml").read_text())
    argv = [f"config={saved}", f"run_dir={tmp_path / 'second'}"]
    assert early_answer(argv) is None
    saved.unlink()  # what a pipe holds after it was read
    assert run.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "second" / "metrics.json").is_file()


@pytest.mark.parametrize("argv, line", [
    (["bad=1"], "error: unknown key 'bad'; benchmark keys: suite, seeds, workers, envs, agents, out"),
    (["envs=Foo"], "error: envs=Foo: Foo is not in the suite; choose from: LongDependency-v0"),
    (["memory.slot=3"], "error: unknown config key 'memory.slot'; did you mean 'memory.slots'?"),
    (["suite=nowhere"], "error: unknown suite 'nowhere'; choose one of: full, quick"),
])
def test_the_benchmark_plans_its_runs_and_refuses_a_bad_line_before_torch_loads(tmp_path, argv, line):
    """`python -m agents.benchmark` refused a bad line after ~5 s of imports (~0.7-1.1 s now): its report, suite and
    thread modules load torch only where they write results or set threads."""
    check_answered_early("agents.benchmark", [*argv, f"out={tmp_path / 'bench'}"], 2, line, cwd=tmp_path)
    assert not (tmp_path / "bench").exists()
