"""Mutation round 7 (the run lifecycle): behaviours of agents/threads.py, startup.py, interrupts.py, preflight.py,
inert_notes.py, agent.py, episodes.py and run_failures.py that no test checked before."""

import errno
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.agent import Agent
from agents.config import ConfigError, load_config
from tests.test_interrupts import failures_off_the_main_thread
from tests.test_run import tiny

ROOT = Path(__file__).resolve().parents[1]


def _tiny_agent(tmp_path, *extra, **kwargs) -> Agent:
    return Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / "cfg", *extra), **kwargs)


def test_a_thread_count_below_the_runs_own_is_a_note_too():
    """threads_note: any other count than the run's (fewer threads as well as more) changes its last bits."""
    from agents.threads import threads_note

    assert threads_note(4, 2, "train.threads") == (
        "note: train.threads=2: the run computed with 4 torch threads; with 2 its numbers can differ in the last bits "
        "from the run's own (leave train.threads out to keep 4)")


def test_a_flush_into_a_closed_pipe_sends_the_stream_to_devnull():
    """ClosedPipeSafe.flush: a flush (not only a write) that finds the reader gone is no error, and the buffered
    text and what follows go to /dev/null."""
    from agents.startup import ClosedPipeSafe

    read, write = os.pipe()
    stream = ClosedPipeSafe(os.fdopen(write, "w", buffering=1 << 16))
    stream.write("buffered, never flushed\n")
    os.close(read)
    stream.flush()  # BrokenPipeError inside
    stream.write("later\n")
    stream.flush()
    assert os.path.samestat(os.fstat(write), os.stat(os.devnull))
    stream.close()


def test_the_streams_are_made_closed_pipe_safe_once(monkeypatch):
    """pipe_safe_streams called again (an entry point run by another's main) wraps sys.stdout and sys.stderr once."""
    from agents.startup import ClosedPipeSafe, pipe_safe_streams

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    pipe_safe_streams()
    first = sys.stdout, sys.stderr
    pipe_safe_streams()
    assert (sys.stdout, sys.stderr) == first
    assert isinstance(sys.stdout, ClosedPipeSafe) and sys.stdout._stream is out and sys.stderr._stream is err


def test_a_signal_in_the_shutdown_with_its_stdout_pipe_closed_keeps_the_exit_code():
    """finish: the handler's flush of stdout into a closed pipe (BrokenPipeError, an OSError) is skipped, and the
    process still exits with main()'s code, not Python's exit 120 for a failed flush at the end."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    code = ("import atexit, signal, sys\n"
            "from agents.startup import finish\n"
            "sys.stdout = open(1, 'w', buffering=1 << 16, closefd=False)  # buffered, whatever PYTHONUNBUFFERED\n"
            "sys.stdout.write('buffered, never flushed')\n"
            "atexit.register(lambda: signal.raise_signal(signal.SIGINT))  # during the cleanup after main\n"
            "finish(3)")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 3, done.stderr


def test_the_preflight_names_what_it_checked_before_a_cold_tiers_line(monkeypatch):
    """model_fits: a cache's cold tier past its disk's room is the cache's own line after `what`."""
    import agents.models
    import agents.trainer  # noqa: F401  (binds the real build_agent first, as tests/test_mutants_cli.py explains)
    from agents.preflight import model_fits
    from memory.cache_cold_dirs import ColdTierError

    def no_room(*args):
        raise ColdTierError("/tmp", entries=10, needed=10**15, free=10)

    monkeypatch.setattr(agents.models, "build_agent", no_room)
    cfg = load_config(["agent=memnet", "device=cpu"])
    with pytest.raises(ConfigError, match=r"^the suite's runs: .*memory\.cache_cold") as caught:
        model_fits(cfg, 64, what="the suite's runs")
    assert "\n" not in str(caught.value)


def test_reset_by_task_on_an_env_with_two_tasks_is_no_note():
    """inert_note: memory.reset=task is inert only with one task; with two it clears at their boundary."""
    from agents.episodes import make_vector_env
    from agents.inert_notes import inert_note

    cfg = load_config(["env=ContinualShift-v0", "memory.reset=task", "env.kwargs.num_tasks=2"])
    env = make_vector_env(cfg.env.id, 1, dict(cfg.env.kwargs))
    assert env.num_tasks == 2
    assert inert_note(cfg, ["memory.reset"], env=env) is None


def test_a_single_reward_for_two_lanes_is_refused(tmp_path):
    """Agent.observe: a (1,) reward is not one per lane; only a scalar stands for every lane."""
    agent = _tiny_agent(tmp_path)
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    with pytest.raises(ValueError, match=r"reward is float64 of shape \(1,\); pass numbers, one per lane \(2,\)"):
        agent.observe(np.zeros(1), terminated, truncated)
    agent.observe(0.0, terminated, truncated)  # a scalar is every lane's


def test_an_agent_entry_with_a_last_task_below_minus_one_is_one_line(tmp_path):
    """Agent.from_checkpoint: last_task is a task id or -1 (none yet); -2 is a damaged entry, not a task."""
    from agents.checkpoint import CheckpointError

    path = _tiny_agent(tmp_path).save(tmp_path / "saved")
    body = torch.load(path, weights_only=True)
    body["agent"] = {"episodes": 0, "last_task": -2}
    torch.save(body, path)
    with pytest.raises(CheckpointError, match=r"agent: .*not an Agent's episode count and last task"):
        Agent.from_checkpoint(path)


def test_sigterm_as_interrupt_puts_the_handler_before_back():
    """sigterm_as_interrupt: after the block SIGTERM has the handler it had before, not `interrupt`."""
    from agents.interrupts import sigterm_as_interrupt

    def theirs(signum, frame):
        pass

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, theirs)
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not theirs
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_file_in_the_way_of_a_folder_is_a_file_failure(tmp_path):
    """run_failures: EEXIST (a file where the run makes a folder, e.g. plots/) is one line, not a bug's traceback."""
    from agents.run_failures import file_failure, is_file_failure

    exc = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(tmp_path / "plots"))
    assert is_file_failure(exc, tmp_path)
    assert file_failure(exc, tmp_path).startswith(f"cannot write {tmp_path / 'plots'} (File exists): a folder is "
                                                  "where the run writes a file, or a file where it makes a folder")


def test_a_bytes_file_name_is_named_as_text(tmp_path):
    """file_failure: TensorBoard's file names are bytes; the line names the path, not b'...'."""
    from agents.run_failures import file_failure

    name = tmp_path / "events.out"
    exc = PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsencode(name))
    assert file_failure(exc, tmp_path).startswith(f"cannot read or write {name} (Permission denied): give it")


def test_no_permission_before_the_run_folder_is_known_is_a_file_failure_but_a_full_disk_is_not():
    """is_file_failure with no run folder yet: only EACCES/EPERM are a line; another write failure then is a bug."""
    from agents.run_failures import is_file_failure

    assert is_file_failure(PermissionError(errno.EACCES, "Permission denied", "x"), None)
    assert not is_file_failure(OSError(errno.ENOSPC, "No space left on device", "x"), None)


def test_sampling_from_non_finite_logits_is_a_floating_point_error():
    """episodes._choose: NaN logits under sampling are the loss check's FloatingPointError, not Categorical's."""
    from agents.episodes import _choose

    with pytest.raises(FloatingPointError, match="non-finite logits"):
        _choose(torch.tensor([[float("nan"), 0.0]]), sample=True)
    assert _choose(torch.tensor([[0.0, 1.0]]), sample=False).tolist() == [1]


def test_a_chunks_columns_pick_the_store_meta_at_the_same_steps():
    """Chunk.columns: the episode/position/task meta is taken at steps `at` too, as the tensors are (B, C')."""
    from agents.episodes import Chunk

    B, C = 2, 5
    t = torch.arange(B * C).reshape(B, C)
    meta = {"episode": np.full((B, C), 7), "position": np.tile(np.arange(10, 10 + C), (B, 1)),
            "task": np.arange(B * C).reshape(B, C)}
    chunk = Chunk(tokens=t, targets=t, scored=t > 3, writes=t > 5, actions=t, rewards=t.float(), meta=meta)
    picked = chunk.columns(torch.tensor([1, 4]))
    assert picked.tokens.tolist() == [[1, 4], [6, 9]]
    assert picked.meta["position"].tolist() == [[11, 14], [11, 14]]
    assert picked.meta["task"].tolist() == [[1, 4], [6, 9]]
    assert picked.meta["episode"].shape == (B, 2)


def test_the_store_meta_counts_positions_from_the_chunks_start_in_the_episode():
    """EpisodeRunner._meta: a later chunk's positions go on from the steps before it (the episode's step count)."""
    from agents.episodes import EpisodeRunner

    meta = EpisodeRunner._meta(None, 9, 32, np.array([[0, 0, 1], [2, 2, 2]]))
    assert meta["position"].tolist() == [[32, 33, 34], [32, 33, 34]]
    assert meta["episode"].tolist() == [[9] * 3] * 2 and meta["task"].tolist() == [[0, 0, 1], [2, 2, 2]]


def test_end_startup_off_the_main_thread_changes_nothing():
    """end_startup in another thread (where handlers cannot be set) is no ValueError and leaves the handlers alone."""
    from agents.startup import end_startup

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert failures_off_the_main_thread(end_startup) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
