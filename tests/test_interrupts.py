"""Ctrl+C and SIGTERM held back where an exception must not land (agents/interrupts.py)."""

import signal
import threading

import pytest

from agents.interrupts import interrupt, interrupts_held, sigterm_as_interrupt
from agents.tb_logger import TBLogger, read_scalars


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_block_interrupts_after_it(sig):
    done = []
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            signal.raise_signal(sig)
            done.append("rest of the block")
        done.append("after the block")
    assert done == ["rest of the block"]


def test_the_handlers_are_put_back_and_a_quiet_block_raises_nothing():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with interrupts_held():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_second_ctrl_c_is_not_held():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            done.append("after the first")
            signal.raise_signal(signal.SIGINT)
            done.append("after the second")
    assert done == ["after the first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def failures_off_the_main_thread(call) -> list[Exception]:
    """What `call()` raised when run in another thread (where signal.signal raises ValueError)."""
    failures = []

    def body():
        try:
            call()
        except Exception as exc:
            failures.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return failures


def test_off_the_main_thread_it_changes_nothing():
    def held():
        with interrupts_held():
            pass

    assert failures_off_the_main_thread(held) == []


def test_ctrl_c_inside_the_tensorboard_writer_leaves_it_able_to_close(tmp_path, monkeypatch):
    """The hang of a stopped run: a KeyboardInterrupt between queue.put's item and its notify left TensorBoard's
    writer thread asleep for up to 120 s, and the run's closing flush waited on it."""
    logger = TBLogger(tmp_path)
    notify, notified = threading.Condition.notify, []

    def ctrl_c_then_notify(self, n=1):  # Ctrl+C arrives as the main thread is about to wake the writer's thread
        if threading.current_thread() is threading.main_thread() and not notified:
            signal.raise_signal(signal.SIGINT)
            notified.append(True)
        return notify(self, n)

    monkeypatch.setattr(threading.Condition, "notify", ctrl_c_then_notify)
    with pytest.raises(KeyboardInterrupt):
        logger.scalars({"train/loss": 1.5, "train/accuracy": 0.25}, step=1)
    monkeypatch.undo()
    assert notified == [True]  # the notify ran: the interrupt came after the call
    logger.close()
    assert read_scalars(tmp_path) == {"train/loss": [(1, 1.5)], "train/accuracy": [(1, 0.25)]}


def test_a_signal_whose_handler_was_set_outside_python_is_left_alone(monkeypatch):
    """getsignal gives None for such a handler (Ray's C++ core in its workers): it cannot be put back after."""
    real = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda sig: None if sig == signal.SIGTERM else real(sig))
    sigterm = real(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            assert real(signal.SIGTERM) is sigterm  # not taken over
            signal.raise_signal(signal.SIGINT)  # still held
    assert real(signal.SIGTERM) is sigterm and real(signal.SIGINT) is signal.default_int_handler


def _python(code: str):
    import subprocess
    import sys

    from tests.repo_env import REPO

    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ctrl_c_while_starting_ends_the_command_even_where_an_import_swallows_the_exit():
    """A Ctrl+C during an entry point's imports raised SystemExit inside the import; a library that caught it left
    numpy.linalg half imported, and the command went on into main() and a RecursionError."""
    done = _python("from agents.startup import guard_startup\n"
                   "guard_startup('nothing was written')\n"
                   "import signal\n"
                   "try:\n    signal.raise_signal(signal.SIGINT)\n"
                   "except BaseException:\n    pass  # what an import that swallows it does\n"
                   "print('went on')")
    assert (done.returncode, done.stdout, done.stderr.strip()) == (130, "", "interrupted while starting; nothing "
                                                                              "was written")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_shutdown_after_main_keeps_its_exit_code(sig):
    """A finished command that got a Ctrl+C or SIGTERM while the interpreter shut down died by the signal, no line."""
    done = _python("import atexit, signal\n"
                   "from agents.startup import finish\n"
                   f"atexit.register(lambda: signal.raise_signal(signal.{sig}))  # during the cleanup after main\n"
                   "print('done', flush=True)\n"
                   "finish(3)")
    assert (done.returncode, done.stdout) == (3, "done\n"), done.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_exit_hooks_keeps_the_exit_code_too(sig):
    """After the exit hooks Python puts its signal handlers back to the defaults, so a signal while the modules were
    torn down (the last ~0.2 s) still killed a finished command (exit -2 or -15). Sent here from a module global's
    __del__, which runs then."""
    done = _python("import os, signal, time\n"
                   "from agents.startup import finish\n"
                   "class Late:\n"
                   f"    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.{sig}, sleep=time.sleep):\n"
                   "        kill(pid, sig)\n"
                   "        sleep(0.2)\n"
                   "late = Late()\n"
                   "print('done', flush=True)\n"
                   "finish(3)")
    assert (done.returncode, done.stdout) == (3, "done\n"), done.stderr


def test_ctrl_c_while_the_trainer_makes_its_optimiser_comes_after_it(tmp_path, monkeypatch):
    """AdamW's first construction imports torch._dynamo (~2.5 s); a Ctrl+C or SIGTERM inside that import ended 1 in 4
    runs interrupted then by SIGINT (exit -2) after their line, measured with real signals (24 of 24 exit 130 now)."""
    import torch

    from agents.config import load_config
    from agents.trainer import Trainer
    from tests.test_run import tiny

    made = []

    class AdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            signal.raise_signal(signal.SIGINT)  # arrives while the optimiser is being made
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", AdamW)
    cfg = load_config(tiny("ContinualShift-v0", "memnet", tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "run")
    assert len(made) == 1  # made whole, then interrupted


def test_sigterm_as_interrupt_puts_the_handler_before_back():
    """Its doc: the handler before is put back after (an entry point's main() called in-process, by a test or a user's
    script, left every later SIGTERM raising KeyboardInterrupt)."""
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is interrupt
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        raise KeyboardInterrupt
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_acts_once_not_again_after_the_block():
    """The second signal of a kind is handled at once, and only then: a block that catches its KeyboardInterrupt ends
    without another one (the first was handled by the second's)."""
    done = []
    try:
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                done.append("caught the second")
    except KeyboardInterrupt:
        done.append("raised again after the block")
    done.append("after the block")
    assert done == ["caught the second", "after the block"]
