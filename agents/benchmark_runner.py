"""The benchmark's runs: each (env, variant, seed) job as a `python -m agents.run` subprocess (then its probes as
`python -m agents.evaluate`), `workers` at a time, a line per finished run with an ETA; Ctrl+C or SIGTERM (to the
benchmark alone too) stops the runs in flight and keeps the records so far. `agents/benchmark.py` plans the jobs
and writes the report."""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from agents import benchmark_report as report
from agents.benchmark_markdown import key_numbers, minutes
from agents.checkpoint_paths import hydra_spelling
from agents.interrupts import interrupts_held
from agents.parent_death import child_env
from agents.tune_overrides import merge_overrides, override_value

TAIL_LINES = 15  # lines of a failed run's log kept in its record
GRACE_S = 30.0  # after Ctrl+C, SIGTERM or its timeout, a run gets this long to end (agents.run: one line) before a kill


@dataclass
class Job:
    env: str
    variant: str
    agent: str
    seed: int
    run_dir: Path
    overrides: list[str]
    probes: dict[str, list] = field(default_factory=dict)  # env option -> values to re-evaluate with
    facts: dict = field(default_factory=dict)  # window, env_kwargs, chance (for the report)


def run_command(job: Job) -> list[str]:
    # merged: agents.run refuses a key given twice, and the job's seed and folder win over any in a suite's overrides
    # the folder in Hydra's spelling: one under `out=results (1)` was refused ("mismatched input ' ('"), every run
    own = [f"seed={job.seed}", f"run_dir={hydra_spelling(str(job.run_dir))}"]
    return [sys.executable, "-m", "agents.run", *merge_overrides(job.overrides, own)]


def probe_command(job: Job, key: str, values: list) -> list[str]:
    return [sys.executable, "-m", "agents.evaluate", f"checkpoint={job.run_dir}",
            f"env.kwargs.{key}={','.join(override_value(x) for x in values)}", f"out=probe_{key}.json"]


REAPS_ONCE = hasattr(os, "wait4") and hasattr(os, "waitid") and hasattr(os, "WNOWAIT")


def wait_child(proc: subprocess.Popen, lock: threading.Lock | None = None) -> tuple[int, float | None]:
    """Exit code and CPU seconds (user + system) of a child process: the CPU time tells what a run costs on an idle
    machine, whatever else ran beside it (wall time does not); os.wait4 reports it, and only to the call that reaps
    the child. So this is the only reaper: it waits for the end without reaping (WNOWAIT), then reaps under `lock`,
    the lock `signal_child` signals under (None: no other thread signals it). (Popen.poll() in the timeout's check or
    inside terminate() / kill() reaped a run that had just ended: its CPU time read 0.)"""
    if not REAPS_ONCE:
        return wait_reaping(proc)
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # blocks until it ends; still to be reaped
        with lock or contextlib.nullcontext():
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:  # reaped elsewhere after all: its exit code is Popen's, its CPU time lost
        return proc.wait(), None
    return proc.returncode, usage.ru_utime + usage.ru_stime


def wait_reaping(proc: subprocess.Popen) -> tuple[int, float | None]:
    """wait_child where os.waitid is missing (macOS before Python 3.13, Windows): os.wait4 where it exists, whose
    CPU time is lost only to a run that signal_child's poll() reaped first (its exit code is then Popen's)."""
    if not hasattr(os, "wait4"):
        return proc.wait(), None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def signal_child(proc: subprocess.Popen, kill: bool = False) -> bool:
    """SIGTERM (SIGKILL with `kill`) to a child still running, without reaping it (`wait_child` does, for its CPU
    time); called under the lock `wait_child` reaps under, so the pid is still the child's. False if it had ended."""
    if not REAPS_ONCE:
        ended = proc.poll() is not None
        if not ended:
            (proc.kill if kill else proc.terminate)()
        return not ended
    try:
        if proc.returncode is not None or os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
            return False  # ended: reaped, or a zombie that wait_child reaps
        os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except (ChildProcessError, ProcessLookupError):
        return False
    return True


class Runner:
    """Runs jobs in subprocesses; remembers the live ones so that Ctrl+C can stop them."""

    def __init__(self, timeout_s: float | None, grace_s: float = GRACE_S):
        self.timeout_s, self.grace_s, self.live, self.stopping = timeout_s, grace_s, set(), False
        self.lock = threading.Lock()

    def _call(self, cmd: list[str], log: Path, deadline: float | None) -> tuple[str | None, str, float]:
        """(None, "", CPU s) on success, else (kind of failure, the tail of the log, CPU s)."""
        # each run gets one core's worth; it ends with the benchmark, also one SIGKILLed (its runs trained on)
        env = child_env() | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(log, "w") as handle, self.lock:
            if self.stopping:
                return "interrupted", "", 0.0
            proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
            self.live.add(proc)
        ended, timed_out = threading.Event(), threading.Event()
        timer = threading.Timer(max(deadline - time.monotonic(), 0.1), self._time_out,
                                (proc, ended, timed_out)) if deadline else None
        if timer is not None:
            timer.start()
        code, cpu = wait_child(proc, self.lock)
        ended.set()
        if timer is not None:
            timer.cancel()
        with self.lock:
            self.live.discard(proc)
            kind = None if code == 0 else ("interrupted" if self.stopping and not timed_out.is_set() else
                                           f"timed out after {self.timeout_s:g} s" if timed_out.is_set() else
                                           f"exit code {code}")
        if kind is not None and timed_out.is_set():  # written once the run has ended (its own writes go where its
            # file offset is); not for one that ended with 0 as the SIGTERM came: it finished, and its results count
            with open(log, "a") as handle:
                handle.write(f"\nbenchmark: this run timed out after {self.timeout_s:g} s (timeout_s) and was "
                             f"stopped: SIGTERM, then SIGKILL if it had not ended {self.grace_s:g} s later\n")
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:]) if kind else ""
        return kind, tail, cpu or 0.0

    def _time_out(self, proc: subprocess.Popen, ended: threading.Event, timed_out: threading.Event) -> None:
        """The run's time is up: SIGTERM (agents.run ends as at Ctrl+C, its log says so and its last checkpoint is
        whole), and SIGKILL if it has not ended `grace_s` later. A plain SIGKILL left the log without a word."""
        with self.lock:
            # a run already being stopped (Ctrl+C) or ended (reaped or about to be, `ended` not set yet) is not
            # one that timed out: a run that ended on its own at the deadline was labelled so
            if ended.is_set() or proc not in self.live or self.stopping:
                return
            if not signal_child(proc):
                return
            timed_out.set()
        if not ended.wait(self.grace_s):
            with self.lock:
                if not ended.is_set():
                    signal_child(proc, kill=True)

    def run(self, job: Job) -> dict:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        deadline = None if self.timeout_s is None else start + self.timeout_s
        record = {"env": job.env, "variant": job.variant, "agent": job.agent, "seed": job.seed,
                  "run_dir": str(job.run_dir), "command": shlex.join(["python", *run_command(job)[1:]]), **job.facts,
                  "status": report.OK, "error_kind": None, "error": None, "metrics": None, "probes": []}
        kind, tail, record["cpu_s"] = self._call(run_command(job), job.run_dir / "run.log", deadline)
        try:
            if kind is None:
                record["metrics"] = json.loads((job.run_dir / "metrics.json").read_text())
            for key, values in job.probes.items() if kind is None else ():
                kind, tail, cpu = self._call(probe_command(job, key, values), job.run_dir / f"probe_{key}.log",
                                             deadline)
                record["cpu_s"] += cpu
                if kind is not None:
                    break
                found = json.loads((job.run_dir / f"probe_{key}.json").read_text())
                record["probes"] += found.get("evaluations", [found])
        except (OSError, ValueError) as exc:  # an output missing or cut short: this run failed, the rest goes on
            kind, tail = "unreadable output", f"{type(exc).__name__}: {exc}"
        if kind is not None:
            record["status"] = report.FAILED if record["metrics"] is None else report.PROBE_FAILED
        record["error_kind"], record["error"] = kind, tail or None
        record["wall_s"] = time.monotonic() - start
        return record

    def stop(self, kill: bool = False) -> None:
        """SIGTERM to every run in flight (agents.run ends as at Ctrl+C), or SIGKILL; no run starts after this."""
        with self.lock:
            self.stopping = True
            for proc in self.live:
                signal_child(proc, kill)


def wind_down(runner: Runner, futures, grace_s: float = GRACE_S) -> None:
    """Stop the runs in flight and wait for them: the benchmark itself may be the only process that got the signal
    (SIGTERM, or `kill -INT` of its pid), so its runs are told here. A run still going after `grace_s`, or at a
    second Ctrl+C / SIGTERM, is killed."""
    runner.stop()
    for future in futures:
        future.cancel()  # (a future not started yet; a started one ends with its process)
    try:
        if not wait(futures, timeout=grace_s)[1]:
            return
    except KeyboardInterrupt:
        pass
    runner.stop(kill=True)
    try:  # killed, they end at once: waited for, their records are kept (after a second Ctrl+C the runs in flight
        wait(futures, timeout=grace_s)  # were left out of the results, "runs: 0" beside their folders)
    except KeyboardInterrupt:
        pass


def eta_s(done: list[dict], pending: list[Job], running: dict, workers: int, now: float | None = None) \
        -> float | None:
    """Seconds left: each unfinished run costs the mean time of finished runs of its (env, variant), or of all
    finished runs for a kind none of which has finished. None (unknown) before any run finished, and while a run of
    such a kind has already taken longer than that guess: it was priced at 0 s left ("0 min 00 s" while it ran).
    The runs left are laid out on the `workers` as the benchmark starts them (each pending run on the first worker
    to be free): the time until the last ends. (The sum over `workers` read 30 s for one 60 s run left of 2 at a
    time: a run is not split between workers.)"""
    if not done:
        return None
    mean_all = sum(r["wall_s"] for r in done) / len(done)
    by_kind: dict = {}
    for r in done:
        by_kind.setdefault((r["env"], r["variant"]), []).append(r["wall_s"])

    def cost(job: Job) -> tuple[float, bool]:
        """(its cost, whether a run of its kind has finished)"""
        times = by_kind.get((job.env, job.variant))
        return (sum(times) / len(times), True) if times else (mean_all, False)

    now = time.monotonic() if now is None else now
    free = []  # each worker's seconds until it is free: a run in flight's time left, 0 for an idle one
    for job, t0 in running.values():
        guess, known = cost(job)
        if not known and now - t0 >= guess:  # a kind slower than the guess: how much slower is unknown
            return None
        free.append(max(guess - (now - t0), 0.0))
    free += [0.0] * max(workers - len(free), 0)
    heapq.heapify(free)
    for job in pending:  # started in this order, each on the first worker to be free
        heapq.heappush(free, heapq.heappop(free) + cost(job)[0])
    return max(free)


def execute(jobs: list[Job], workers: int, timeout_s: float | None) -> tuple[list[dict], bool]:
    """Run every job, `workers` at a time, printing a line per finished run; returns (records, interrupted)."""
    runner, records, running, pending, interrupted = Runner(timeout_s), [], {}, list(jobs), False
    widths = line_widths(jobs, timeout_s)
    pool, futures = ThreadPoolExecutor(max_workers=workers), {}
    try:
        try:
            while pending or futures:
                while pending and len(futures) < workers:  # submit as slots free up, so running == started
                    job = pending.pop(0)
                    futures[pool.submit(runner.run, job)] = job
                    running[id(job)] = (job, time.monotonic())
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = futures.pop(future)
                    running_since = running.pop(id(job))[1]
                    try:
                        record = future.result()
                    except Exception as exc:  # e.g. its folder cannot be written: report the run, go on
                        record = {"env": job.env, "variant": job.variant, "agent": job.agent, "seed": job.seed,
                                  "run_dir": str(job.run_dir), **job.facts, "status": report.FAILED, "metrics": None,
                                  "error_kind": "benchmark error", "error": f"{type(exc).__name__}: {exc}",
                                  "probes": [], "wall_s": time.monotonic() - running_since, "cpu_s": 0.0}
                    records.append(record)
                    print(f"{run_line(record, len(records), widths)}   ETA "
                          f"{minutes(eta_s(records, pending, running, workers))}", flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping the runs in flight; writing the results so far", file=sys.stderr)
            wind_down(runner, futures)  # (a second signal kills them)
    finally:
        # the runs are over: a signal from here is held, then counts as a stop (the results are written, exit 130);
        # it was a KeyboardInterrupt traceback out of the pool's shutdown, and no results.md
        try:
            with interrupts_held():
                pool.shutdown(wait=True)
                if interrupted:
                    # the runs stopped in flight, as failed ("interrupted", their log tails): they were left out,
                    # and results.md said "runs: 0" beside folders holding their checkpoints
                    stopped = [f.result() for f in futures
                               if f.done() and not f.cancelled() and f.exception() is None]
                    for record in stopped:  # a line each, as for the runs before (a run that ended as the signal
                        records.append(record)  # came was counted in the results without one)
                        print(run_line(record, len(records), widths), flush=True)
        except KeyboardInterrupt:  # (the one held)
            interrupted = True
    return records, interrupted


def line_widths(jobs: list[Job], timeout_s: float | None) -> dict[str, int]:
    """The columns of the runs' lines, as wide as their longest entry among every job: fixed widths (env 17,
    variant 16) let a preset (LongDependency-Hard-v0), a long variant name or seed 10 push the columns after them
    out of line. Wall seconds: up to the timeout and the grace after it (a run past 9999.9 s widened its line)."""
    wall = len(f"{timeout_s + GRACE_S:.1f}") if timeout_s is not None else 0
    return {"n": len(str(len(jobs))), "total": len(jobs), "env": max((len(j.env) for j in jobs), default=1),
            "variant": max((len(j.variant) for j in jobs), default=1),
            "seed": max((len(str(j.seed)) for j in jobs), default=1), "wall": max(wall, 6)}


def run_line(record: dict, n: int, widths: dict[str, int]) -> str:
    """The terminal's line for the n-th finished run: its key numbers, or its failure and its log; the columns
    `line_widths` wide."""
    status = record["status"] if record["status"] != report.OK else key_numbers(record)
    if record["error_kind"]:
        status += f" ({record['error_kind']}; see {record['run_dir']}/*.log)"
    w = widths
    return (f"[{n:>{w['n']}}/{w['total']}] {record['env']:<{w['env']}} {record['variant']:<{w['variant']}} "
            f"s{record['seed']:<{w['seed']}}  {record['wall_s']:{w['wall']}.1f} s  {status}")
