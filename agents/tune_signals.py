"""SIGTERM and Ctrl+C in a sweep. Ctrl+C while Tune runs the sweep is Tune's own SIGINT handler: it stops the
sweep after saving its state, and the sweep prints its table, writes its results and names `resume=`; elsewhere
it is Python's KeyboardInterrupt, one line from agents.tune's main. A SIGTERM (a scheduler's stop, `kill`) does
the same here: ray.init installs a SIGTERM handler that calls sys.exit, which tore the sweep down mid-flight
(exit 134, a stack dump from Ray's C++ core, no table, no results, no resume line)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from agents.checkpoint_paths import shell_arg
from agents.interrupts import interrupt, interrupts_held

INTERRUPTED = 130  # agents.run's and agents.benchmark's code for Ctrl+C / SIGTERM
TUNER_STATE = "tuner.pkl"  # the file of a sweep folder that Tune restores from (what Tuner.can_restore looks for)
EXPERIMENT_STATE = "experiment_state-*.json"  # Tune's saved trials: written from its first step on, after TUNER_STATE


def sigterm_as_ctrl_c(signum, frame):
    """SIGTERM handler: whatever Ctrl+C does at this moment (the SIGINT handler in force: Tune's during the sweep,
    which restores Python's after its first call, so a second SIGTERM ends the wait as a second Ctrl+C does)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or not Python's (a background job): still stop
        interrupt(signum, frame)


def catch_sigterm() -> None:
    """Install `sigterm_as_ctrl_c`; call it after ray.init, which installs its own. Not off the main thread
    (where handlers cannot be set)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_as_ctrl_c)


def init_ray_held(**kwargs) -> None:
    """ray.init(**kwargs), with Ctrl+C and SIGTERM held until Ray has started (`interrupts_held`: a second Ctrl+C
    acts at once), then Ray shut down and KeyboardInterrupt raised. Before, a SIGTERM while Ray started met Ray's
    handlers (`_ray_sigterm_handlers_off`), exited 15 or 134 and left Ray's processes running."""
    import ray

    try:
        with interrupts_held(), _ray_sigterm_handlers_off(), _ray_processes_in_their_own_session():
            ray.init(**kwargs)
    except KeyboardInterrupt:
        if ray.is_initialized():
            ray.shutdown()
        raise


@contextmanager
def _ray_processes_in_their_own_session():
    """While the block runs, the processes ray.init starts (GCS server, raylet, log monitor; the raylet's workers
    follow it) start in a session of their own. A stop sent to the sweep's process group (`timeout`, a scheduler's
    cancel, systemd) killed the GCS server with the sweep: the sweep then hung 60 s in Ray and exited 1 with a
    C++ error, no table, no resume line. Ray stops them itself (`ray.shutdown`), and the kernel when the sweep
    dies (Linux: Ray asks for its children to be killed with their parent). Where the kernel cannot do that, Ray
    keeps them in the sweep's group for its reaper process to kill, and so does this."""
    from ray._private import services
    from ray._private import utils as ray_utils

    console_popen = getattr(services, "ConsolePopen", None)
    if console_popen is None or not ray_utils.detect_fate_sharing_support():
        yield
        return

    class OwnSessionPopen(console_popen):
        def __init__(self, *args, **kwargs):
            kwargs["start_new_session"] = True
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = console_popen


@contextmanager
def _ray_sigterm_handlers_off():
    """While the block runs, ray.init installs neither of its SIGTERM handlers: Python's (sys.exit, exit 15 mid-start)
    and its C++ core's failure handler (a stack dump, then abort: 134). The handler in force stays, for
    `catch_sigterm` to replace once Ray has started; the C++ handler is not installed in this process at all (it
    only prints a stack dump on a crash of Ray's core). A Ray without these hooks is left as it is."""
    from ray._private import ray_constants
    from ray._private import utils as ray_utils

    install = getattr(ray_utils, "set_sigterm_handler", None)
    off = getattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
    if install is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    if off is not None:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        if install is not None:
            ray_utils.set_sigterm_handler = install
        if off is not None:
            ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = off


def saved_handlers() -> dict:
    """The SIGTERM and SIGINT handlers in force now, for `restore_handlers`: ray.init replaces the first, and
    Tune's SIGINT handler stays installed after the sweep unless it fired (a later Ctrl+C did nothing)."""
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore_handlers(saved: dict) -> None:
    """Put back what `saved_handlers` returned (a handler set outside Python, None there, is left alone)."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def interrupted_line(sweep_dir: Path | None) -> str:
    """The line for a Ctrl+C / SIGTERM that ended the command outside Tune's handling (while preparing or
    starting Ray, a second one while Tune saved its state, while writing the results)."""
    # Tune's own test (Tuner.can_restore: its tuner.pkl is there) and its saved trials (a resume= of tuner.pkl alone
    # ran one trial of none of the swept values), without importing Ray's Tune here: the Ctrl+C may have stopped that
    # import halfway (resume= loads it in main()), and importing it again failed on the half-made pandas modules
    if sweep_dir is not None and tune_saved_trials(sweep_dir):
        return f"interrupted; continue the sweep with: python -m agents.tune {shell_arg('resume', sweep_dir)}"
    return "interrupted before any trial started; nothing to continue, start the sweep again"


def tune_saved_trials(sweep_dir: Path) -> bool:
    """Tune's tuner.pkl and its saved trials (an experiment_state-*.json) are in the sweep folder: what a restore needs.
    Tune writes the first as its Tuner is made, the second at its first step, where it also makes the trial folders
    (which stay empty until the trials start): Tune's restore of a folder without it ran a trial of none of the
    swept values."""
    return (sweep_dir / TUNER_STATE).is_file() and any(sweep_dir.glob(EXPERIMENT_STATE))
