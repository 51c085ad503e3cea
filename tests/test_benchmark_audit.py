"""`python -m agents.benchmark` and its report, fast checks of an audit's findings: ACC shown when only some tasks
were trained, the hints for the run-only keys, out= empty, results rebuilt from results.json, an ETA that is not
"0 min 00 s" while a run of an unknown kind is in flight, runs that ignore SIGTERM, the SIGTERM handler's scope, and
the quick suite's header. (The signals in a real process: tests/test_benchmark_signals.py.)"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents import benchmark, benchmark_rebuild, benchmark_runner
from agents.benchmark_markdown import env_tables
from agents.benchmark_report import aggregate, write_results
from agents.interrupts import interrupt
from tests.repo_env import REPO
from tests.test_benchmark import BUCKETS, CS, LD, NR, record

CONTEXT = {"suite": "test", "command": "python -m agents.benchmark", "machine": "2 CPUs", "started": "now",
           "wall_s": 60.0, "workers": 2, "interrupted": False}


def header(lines: list[str]) -> list[str]:
    return [cell.strip() for cell in lines[2].strip("|").split("|")]


def test_acc_is_shown_when_only_some_tasks_were_trained_and_hidden_when_it_is_the_eval_accuracy_again():
    """train.episodes=2 on ContinualShift trains task 0 of 5: ACC 0.68 (over the trained task) and eval accuracy
    0.29 (over all 5); no BWT (one task trained), and the ACC column was dropped."""
    cs = [record(CS, "memnet", s, accuracy=0.29, ACC=0.68, BWT=None) for s in range(2)]
    lines = env_tables(CS, aggregate(cs)[CS])
    assert "ACC" in header(lines) and "| 0.290 | 0.680 |" in lines[4]
    one_task = [record(LD, "memnet", s, accuracy=0.5 + 0.1 * s, ACC=0.5 + 0.1 * s) for s in range(2)]
    assert "ACC" not in header(env_tables(LD, aggregate(one_task)[LD]))  # the same number twice
    every_task = [record(CS, "memnet", s, accuracy=0.9, ACC=0.9, BWT=-0.01) for s in range(2)]
    assert "ACC" in header(env_tables(CS, aggregate(every_task)[CS]))  # several tasks: the continual metric


def test_a_number_that_only_some_seeds_report_says_on_how_many_it_rests():
    """A distance bucket that one seed's evaluation filled was printed as a full result (`0.000`) in a row whose
    "seeds ok" said 3/3; a failed seed does not count in the row's seeds."""
    cs = [record(CS, "memnet", 0, accuracy=0.5, accuracy_by_distance={"16": 0.0, "64": 0.5}),
          *[record(CS, "memnet", s, accuracy=0.5, accuracy_by_distance={"64": 0.7}) for s in (1, 2)],
          record(CS, "memnet", 3, status="failed")]
    text = "\n".join(env_tables(CS, aggregate(cs)[CS]))
    assert "| memnet | 0.000 (1 of 3 seeds) | 0.633 [0.567, 0.700] |" in text  # the bootstrap interval of 3
    assert "| memnet | memnet | 3/4 (1 FAILED) | 0.500 |" in text  # every seed reports it: no note


@pytest.mark.parametrize("arg, message", [
    ("run_dir=x", "error: run_dir= is set per run by the benchmark; choose the benchmark's folder with out= (each "
                  "run writes <out>/<env>/<variant>/s<seed>)"),
    ("runs_root=x", "error: runs_root= is set per run by the benchmark; choose the benchmark's folder with out="),
    ("resume=x", "error: resume=: a benchmark cannot be resumed; start it again with a new out="),
    ("out=", "error: out= is empty; name a new folder"),  # was "out='<the working folder>' is not empty"
])
def test_run_only_keys_and_an_empty_out_name_the_fix(arg, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "used").write_text("x")  # the working folder is not empty
    assert benchmark.main([arg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]


def saved_benchmark(bench_dir: Path) -> list[dict]:
    runs = [record(NR, "memnet", s, recall_by_delay={"10": 0.96}, accuracy=0.96, env_kwargs={"delay": 10})
            for s in range(2)]
    runs += [record(LD, "transformer", s, chance=1 / 63, accuracy_by_distance={str(b): 0.5 for b in BUCKETS})
             for s in range(2)] + [record(LD, "lstm", 0, status="failed")]
    bench_dir.mkdir()
    write_results(bench_dir, json.loads(json.dumps(runs)), CONTEXT, 0.03)
    return runs


def test_the_report_entry_point_writes_the_results_again_from_results_json(tmp_path):
    """`python -m agents.benchmark_report DIR` exited 0 and did nothing; it rebuilds results.md, .json and plots."""
    bench = tmp_path / "bench"
    saved_benchmark(bench)
    md, saved = (bench / "results.md").read_text(), json.loads((bench / "results.json").read_text())
    (bench / "results.md").unlink()
    done = subprocess.run([sys.executable, "-m", "agents.benchmark_report", str(bench)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert re.fullmatch(rf"{re.escape(str(bench / 'results.md'))}, results.json, \d+ plots written again from 5 "
                        r"runs \(\d+ targets, \d+ MISSED\)\n", done.stdout), done.stdout
    assert (bench / "results.md").read_text() == md
    assert json.loads((bench / "results.json").read_text()) == saved  # the chance margin (0.03) kept too
    assert (bench / "plots" / f"{LD}_accuracy_vs_distance.png").is_file()


def test_one_run_and_one_plot_are_counted_in_the_singular(tmp_path, monkeypatch, capsys):
    """The benchmark's last line and the report's said "1 runs" and "1 plots"."""
    one = [record(LD, "transformer", 0, chance=1 / 63, accuracy_by_distance={str(b): 0.5 for b in BUCKETS})]
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout_s: (json.loads(json.dumps(one)), False))
    out = tmp_path / "bench"
    assert benchmark.main(["envs=LongDependency-v0", "agents=transformer", "seeds=1", f"out={out}"]) == 0
    assert re.search(rf"\n1 run \(0 failed\) in \d+ min \d\d s: {re.escape(str(out / 'results.md'))}, results.json, "
                     r"1 plot\n", capsys.readouterr().out)
    assert benchmark_rebuild.main([str(out)]) == 0
    assert capsys.readouterr().out == (f"{out / 'results.md'}, results.json, 1 plot written again from 1 run (2 "
                                       "targets, 1 MISSED)\n")  # MemNet's (not run) and the transformer's


@pytest.mark.parametrize("argv, message, code", [
    ([], "error: give one folder, got 0 arguments; usage: python -m agents.benchmark_report DIR", 2),
    (["{tmp}/nope"], "error: {tmp}/nope/results.json does not exist; give the out= folder of a python -m "
                     "agents.benchmark", 2),
    (["{tmp}/cut"], "error: {tmp}/cut/results.json is not JSON (", 2),
    (["{tmp}/other"], "error: {tmp}/other/results.json is not a benchmark's results.json (no runs, suite, command", 2),
    # an audit, 2026-12-03: both were read as a folder ("--bogus/results.json does not exist")
    (["--bogus"], "error: '--bogus' is not an argument of agents.benchmark_report; it takes the folder alone;", 2),
    (["out={tmp}/nope"], "error: 'out={tmp}/nope' is not an argument of agents.benchmark_report; it takes the "
                         "folder alone;", 2),
])
def test_the_report_entry_point_refuses_a_folder_without_a_benchmark_in_one_line(argv, message, code, tmp_path,
                                                                                 capsys):
    for name, text in (("cut", '{"runs": ['), ("other", '{"accuracy": 1}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    assert benchmark_rebuild.main([a.format(tmp=tmp_path) for a in argv]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(tmp=tmp_path)) and len(err.splitlines()) == 1, err


def test_eta_is_unknown_while_a_run_of_an_unfinished_kind_outlasts_the_guess():
    """The last runs in flight of kinds none of which had finished were priced at the mean of the other kinds and
    clamped at 0 past it: "ETA 0 min 00 s" for minutes."""
    done = [record(LD, "lstm", 0) | {"wall_s": 20.0}]
    memnet, lstm = (benchmark_runner.Job(LD, v, v, 1, None, []) for v in ("memnet", "lstm"))
    eta = benchmark_runner.eta_s
    assert eta(done, [], {1: (memnet, 100.0)}, workers=1, now=105.0) == pytest.approx(15.0)  # within the guess
    assert eta(done, [], {1: (memnet, 100.0)}, workers=1, now=130.0) is None  # past it: unknown, not 0
    assert benchmark_runner.minutes(None) == "?"
    assert eta(done, [lstm], {1: (lstm, 100.0)}, workers=1, now=130.0) == pytest.approx(20.0)  # a known kind: 0 + 20


def test_a_run_that_ignores_sigterm_is_killed_after_the_grace_time(tmp_path):
    runner, log = benchmark_runner.Runner(None), tmp_path / "run.log"
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "time.sleep(120)")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(runner._call, [sys.executable, "-c", stubborn], log, None)
        try:
            deadline = time.monotonic() + 60
            while "ready" not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline and not future.done()
                time.sleep(0.02)
            start = time.monotonic()
            benchmark_runner.wind_down(runner, {future: None}, grace_s=0.5)
            assert future.result(timeout=30)[0] == "interrupted"
            assert time.monotonic() - start < 30
        finally:  # a failed test: no process left sleeping
            for proc in list(runner.live):
                proc.kill()


def test_sigterm_reads_as_ctrl_c_while_the_benchmark_runs_and_the_old_handler_is_back_after(tmp_path, monkeypatch,
                                                                                               capsys):
    seen = []

    def execute(jobs, workers, timeout_s):
        seen.append(signal.getsignal(signal.SIGTERM))
        return [], True

    monkeypatch.setattr(benchmark, "execute", execute)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "bench"
    assert benchmark.main(["envs=LongDependency-v0", "agents=lstm", "seeds=1", f"out={out}"]) == 130
    assert seen == [interrupt] and signal.getsignal(signal.SIGTERM) is before
    assert "(INTERRUPTED: partial results)" in (out / "results.md").read_text()

    def planning(*args):  # Ctrl+C or SIGTERM before the first run: one line, not a traceback
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "plan", planning)
    capsys.readouterr()
    assert benchmark.main([f"out={tmp_path / 'other'}"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted before any run started; nothing was run"
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_quick_suite_names_where_its_cost_is_measured_instead_of_quoting_numbers():
    head = [ln for ln in (REPO / "agents" / "conf" / "benchmark" / "quick.yaml").read_text().splitlines()
            if ln.startswith("#")]
    readme = (REPO / "README.md").read_text()
    assert not any(re.search(r"\b[0-9a-f]{7}\b|\d+ min \d+ s|CPU-minutes", ln) for ln in head), head
    for section in re.findall(r'"([^"]+)"', " ".join(head)):
        if section != "CPU s":
            assert section in readme, section


def test_a_failed_run_with_an_empty_log_says_so_instead_of_an_empty_block(tmp_path):
    """A run that timed out before writing a line left an empty ``` block under "Failed runs"."""
    runs = [record(LD, "memnet", 0), {**record(LD, "memnet", 1, status="failed"), "error": ""}]
    text = write_results(tmp_path, runs, CONTEXT)[2]
    failed = text.split("## Failed runs", 1)[1]
    assert "```\n(the log is empty)\n```" in failed


def test_the_command_line_wins_over_the_benchmarks_own_settings_and_the_command_runs_as_written(tmp_path):
    """train.progress=false went after the command line's overrides (a user's train.progress=true was dropped), and
    results.json's `command` lacked its `python`."""
    from agents.benchmark_runner import Runner
    from agents.benchmark_suite import load_suite

    (job,) = benchmark.plan({"envs": [LD], "agents": ["lstm"], "seeds": 1}, load_suite("quick"),
                            ["train.progress=true"], tmp_path)
    assert [o for o in job.overrides if o.startswith("train.progress=")] == ["train.progress=true"]
    runner = Runner(timeout_s=None)
    runner.stop()  # no run starts: the record alone
    assert runner.run(job)["command"].startswith("python -m agents.run env=LongDependency-v0 agent=lstm ")


def test_a_run_past_its_timeout_is_told_to_stop_and_its_log_says_it_timed_out(tmp_path):
    """A timed-out run was SIGKILLed at once: its log (the tail in results.md) ended mid-line with no word of the
    timeout. It gets SIGTERM (agents.run's own "interrupted; continue ..." line), then SIGKILL after the grace."""
    polite = ("import signal, sys, time\n"
              "def bye(*a):\n    print('stopped by SIGTERM', flush=True); sys.exit(130)\n"
              "signal.signal(signal.SIGTERM, bye); print('ready', flush=True); time.sleep(120)")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
               "time.sleep(120)"
    for name, code in (("polite", polite), ("stubborn", stubborn)):
        runner, log = benchmark_runner.Runner(timeout_s=2.0, grace_s=0.5), tmp_path / f"{name}.log"
        start = time.monotonic()
        kind, tail, _ = runner._call([sys.executable, "-c", code], log, time.monotonic() + 2.0)
        assert time.monotonic() - start < 60 and not runner.live
        assert kind == "timed out after 2 s"
        lines = tail.splitlines()
        assert lines[-1] == ("benchmark: this run timed out after 2 s (timeout_s) and was stopped: SIGTERM, then "
                             "SIGKILL if it had not ended 0.5 s later")
        assert ("stopped by SIGTERM" in lines) == (name == "polite") and "ready" in lines


def test_a_run_that_ended_or_is_being_stopped_is_not_labelled_timed_out():
    """The timer could fire between the run's reaping and `ended` being set (a run that ended on its own at the
    deadline got the 'timed out' line and label), or during a Ctrl+C's grace (an interrupted run read 'timed out')."""
    import threading

    runner = benchmark_runner.Runner(timeout_s=1.0, grace_s=0.1)
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # ended, `ended` not set yet
    runner.live.add(done)
    timed_out = threading.Event()
    runner._time_out(done, threading.Event(), timed_out)
    assert not timed_out.is_set()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runner.live.add(sleeper)
        runner.stopping = True  # a Ctrl+C is stopping it already
        runner._time_out(sleeper, threading.Event(), timed_out)
        assert not timed_out.is_set() and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not hasattr(__import__("os"), "waitid"), reason="no os.waitid here: no CPU time at all")
@pytest.mark.parametrize("stop", ["timeout", "ctrl-c", "ctrl-c kill"])
def test_a_run_that_ended_as_the_timeout_or_a_ctrl_c_came_keeps_its_cpu_time(stop):
    """The timer's check (Popen.poll()) or Ctrl+C's terminate() / kill() (which poll first) reaped a run that had
    just ended, before wait_child's os.wait4: its CPU time, which only the reaping call gets, read 0."""
    import os
    import threading

    runner = benchmark_runner.Runner(timeout_s=1.0, grace_s=0.1)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    proc = subprocess.Popen([sys.executable, "-c", burn])
    runner.live.add(proc)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # it has ended, not reaped yet: the timer fires now
    timed_out = threading.Event()
    if stop == "timeout":
        runner._time_out(proc, threading.Event(), timed_out)
    else:
        runner.stop(kill=stop == "ctrl-c kill")
    code, cpu = benchmark_runner.wait_child(proc)  # (Runner._call passes its lock: no signal is sent meanwhile)
    assert code == 0 and not timed_out.is_set()
    assert cpu is not None and cpu >= 0.3  # at least its own busy loop's


@pytest.mark.skipif(not hasattr(__import__("os"), "wait4"), reason="no os.wait4 here: no CPU time at all")
def test_a_run_keeps_its_cpu_time_where_there_is_wait4_but_no_waitid(monkeypatch):
    """Where os.waitid is missing but os.wait4 is not (macOS before Python 3.13), wait_child fell back to
    Popen.wait(): every run's cpu_s read 0, where os.wait4 had given it before."""
    monkeypatch.setattr(benchmark_runner, "REAPS_ONCE", False)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    proc = subprocess.Popen([sys.executable, "-c", burn])
    code, cpu = benchmark_runner.wait_child(proc)
    assert code == 0 and proc.returncode == 0
    assert cpu is not None and cpu >= 0.3
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert benchmark_runner.signal_child(sleeper)  # its fallback: Popen's terminate
    code, _ = benchmark_runner.wait_child(sleeper)
    assert code == -15 and not benchmark_runner.signal_child(sleeper)


def test_a_preset_is_judged_by_no_target_and_results_say_so(tmp_path):
    """A preset was judged by its base env's targets (by the id's first word): LongDependency-Easy-v0, whose
    distances end at 64, read MISSED on "every bucket up to 1024", or met on buckets up to 64 only."""
    easy = "LongDependency-Easy-v0"
    runs = [record(easy, "memnet", s, accuracy=0.99, acc_d64=0.99) for s in range(3)]
    runs += [record(LD, "memnet", s, accuracy=0.99, acc_d1024=0.99) for s in range(3)]
    _, targets, text = write_results(tmp_path, runs, CONTEXT)
    assert {t["env"] for t in targets} == {LD}
    assert f"No targets for {easy}: the issue states them for the base envs' settings." in text


@pytest.mark.parametrize("item, message", [
    ("seed=3", "seed= is set per run by the benchmark; drop it and use seeds="),  # each run's own seed won silently
    ("+run_dir=/tmp/elsewhere", "run_dir= is set per run by the benchmark; drop it and choose the benchmark's folder"),
    ("runs_root=elsewhere", "runs_root= is set per run by the benchmark; drop it and choose the benchmark's folder"),
    ("resume=runs/x", "a benchmark starts every run afresh; drop it"),  # every run failed, after the plan
])
def test_a_suite_that_sets_what_the_benchmark_sets_per_run_is_refused(tmp_path, item, message):
    from agents.benchmark_suite import load_suite
    from agents.config import ConfigError

    suite = tmp_path / "s.yaml"
    suite.write_text(f"envs:\n  {LD}: {{}}\nvariants:\n  m: {{agent: lstm, overrides: ['{item}']}}\n")
    with pytest.raises(ConfigError, match=rf"^variants.m.overrides: {re.escape(item)}: {re.escape(message)}"):
        load_suite(str(suite))


@pytest.mark.parametrize("where, item", [("envs", "env=LongDependency-v0"), ("variants", "agent=lstm"),
                                         ("overrides", "+env.id=NeedleRecall-v0")])
def test_a_suite_that_sets_a_runs_env_or_agent_is_refused(tmp_path, where, item):
    """A suite's env= or agent= won over the run's own: another env or agent ran under the row's name
    (results.json said transformer on LongDependency-Easy-v0 for an lstm on LongDependency-v0)."""
    from agents.benchmark_suite import load_suite
    from agents.config import ConfigError

    entry = {"envs": "envs:\n  LongDependency-Easy-v0:\n    overrides: [ITEM]\nvariants:\n  m: {agent: transformer}\n",
             "variants": "envs:\n  LongDependency-Easy-v0: {}\nvariants:\n  m: {agent: lstm, overrides: [ITEM]}\n",
             "overrides": "overrides: [ITEM]\nenvs:\n  LongDependency-Easy-v0: {}\nvariants:\n  m: {agent: lstm}\n"}
    suite = tmp_path / "s.yaml"
    suite.write_text(entry[where].replace("ITEM", item))
    with pytest.raises(ConfigError, match=rf": {re.escape(item)}: each run's env and agent come from the suite"):
        load_suite(str(suite))


def test_a_run_that_exits_0_as_its_timeout_comes_is_not_logged_as_timed_out(tmp_path):
    """A run whose timeout's SIGTERM came during its shutdown ends with exit code 0 (agents.run's `finish`), and its
    results count; its run.log said "this run timed out ... and was stopped" too, against the record."""
    import sys
    import time

    from agents.benchmark_runner import Runner

    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
             "print('work done', flush=True)\n"
             "time.sleep(30)\n")
    log = tmp_path / "run.log"
    kind, _, _ = Runner(timeout_s=1.0, grace_s=5.0)._call([sys.executable, "-c", child], log, time.monotonic() + 1.0)
    assert kind is None and "work done" in log.read_text() and "timed out" not in log.read_text()
