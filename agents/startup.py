"""What an entry point sets before its imports (torch, Hydra, matplotlib), which take seconds: a Ctrl+C or SIGTERM
meanwhile is one line, torch's threads spin only briefly when they wait (`threads_spin_briefly`), and a closed pipe
on the output (`| head`) does not stop the command (`ClosedPipeSafe`). Imports nothing slow, so an entry point calls
`guard_startup` under its main guard above its slow imports, and `end_startup` first thing in main()
(agents/run.py, agents/evaluate.py); a script under benchmarks/ runs its main() with `run_script`.
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import sys

from agents.parent_death import die_with_parent

SPIN_COUNT = "3000"  # libgomp's busy-wait loops before a waiting thread sleeps (its own default: 300,000)
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # how OpenMP threads wait; any one: the user's


def threads_spin_briefly() -> None:
    """Torch's (and FAISS's) OpenMP threads wait for work spinning only briefly, then sleep: GOMP_SPINCOUNT=3000
    for GNU OpenMP (torch's Linux builds), KMP_BLOCKTIME=0 (sleep at once) for LLVM's (macOS), unless
    OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME is set already (a user's choice stays). OpenMP reads them
    once, when torch loads: so before the first `import torch`.

    Why 3000 (`benchmarks/agents.py`, 2 cores, MemNet / transformer training tokens/s; README "Threads on a busy
    machine"): libgomp's own default (300,000 spins) made a lone run ~12,400 / ~35,000 but two runs side by side
    200-500 each (a waiting thread spun through the time the other run held the cores); sleeping at once
    (OMP_WAIT_POLICY=PASSIVE, memstream's setting before) ~6,900 / ~17,400 alone (a wake-up costs more than most
    ops) and ~8,000 / ~21,000 each side by side; 3000 spins ~11,000 / ~32,000 alone and ~5,600 / ~12,700 each
    side by side."""
    if any(name in os.environ for name in WAIT_SETTINGS):
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    os.environ["KMP_BLOCKTIME"] = "0"


def thread_wait_setting() -> str:
    """How this process's OpenMP threads wait, for a measurement's header (it moves tokens/s by up to 2x): the
    settings in force, e.g. 'GOMP_SPINCOUNT=3000, KMP_BLOCKTIME=0', or "OpenMP's default wait" where none is."""
    return ", ".join(f"{name}={os.environ[name]}" for name in WAIT_SETTINGS if name in os.environ) or \
        "OpenMP's default wait"


# output that cannot reach its reader: a closed pipe, or a log file on a full disk or spent quota (the run's own
# files may be on another disk: the first print stopped the run, blaming the run folder's disk)
LOST_OUTPUT = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT)


class ClosedPipeSafe:
    """A text stream (sys.stdout, sys.stderr) whose reader may go away: once a write or flush finds the pipe closed
    (`python -m agents.run --help | head`, a run piped into `head -1`), the stream's descriptor goes to /dev/null
    and the command carries on to its end, its work written and its exit code its own. Before, the next print
    raised BrokenPipeError: a traceback and exit 1, for a run after its training was done, or in the middle of it.
    Everything else is the wrapped stream's (fileno, isatty, encoding, ...)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno not in LOST_OUTPUT:
                raise
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno not in LOST_OUTPUT:
                raise
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())  # what the stream still buffers goes there on its next flush
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def pipe_safe_streams() -> None:
    """sys.stdout and sys.stderr made `ClosedPipeSafe` (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ClosedPipeSafe):
            setattr(sys, name, ClosedPipeSafe(stream))


def guard_startup(written: str) -> None:
    """Until `end_startup`, SIGINT and SIGTERM print `interrupted while starting; <written>` and exit 130 (a
    KeyboardInterrupt traceback from inside importlib for Ctrl+C; for SIGTERM, exit 143 and nothing said). Also
    `threads_spin_briefly`, stdout and stderr `ClosedPipeSafe`, and a process started by a benchmark ends with it
    (`parent_death.die_with_parent`). A working folder deleted under the shell is one line and exit 2 (torch's
    import died of it in MKL, `Cannot load libtorch_cpu.so`, or the command said `[Errno 2] No such file or
    directory`, naming nothing)."""
    threads_spin_briefly()
    pipe_safe_streams()
    try:
        os.getcwd()
    except FileNotFoundError:
        from agents.config_messages import error_line  # (escapes a newline in the folder's name)

        where = os.environ.get("PWD", "")  # the shell's name for it (one that exists is another folder's)
        where = "" if not where or os.path.isdir(where) else where + " "
        print(error_line(f"the working folder {where}no longer exists (deleted or moved after the shell entered it); "
                         "cd to a folder that exists and run the command again"), file=sys.stderr, flush=True)
        os._exit(2)  # (nothing has started that an exit would clean up)

    def _interrupted_while_starting(signum, frame):
        print(f"\ninterrupted while starting; {written}", file=sys.stderr, flush=True)
        os._exit(130)  # not SystemExit: an import it lands in may swallow that, half done, and the command went on
        # into main() and a RecursionError (numpy.linalg); nothing is written while it starts, so nothing is lost

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_starting)
    die_with_parent()  # a benchmark's run: ends with the benchmark, SIGKILL included (it trained on, orphaned)


def end_startup() -> None:
    """main() has begun: Ctrl+C is KeyboardInterrupt again, and SIGTERM is back to its default where the startup
    guard had it (the command's own handling, `interrupts.sigterm_as_interrupt`, takes it over from there). Only in
    the main thread, where handlers can be set."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if getattr(signal.getsignal(signal.SIGTERM), "__name__", None) == "_interrupted_while_starting":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_finishing = False  # set by `finish`: the command is done, its interpreter shutting down


def _ignore_signals_to_the_end() -> None:
    """The last exit hook (registered on import, before any slow import registers its own, so it runs after them):
    once a finished command's hooks have run, Ctrl+C and SIGTERM are ignored for the rest of the shutdown. Python
    then puts its own signal handlers back to the defaults (ignored ones stay), and a signal in that last ~0.2 s
    killed the process (exit -2 or -15) instead of letting it exit with its own code."""
    if _finishing:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


atexit.register(_ignore_signals_to_the_end)


def finish(code: int) -> None:
    """Exit with main()'s `code`. A Ctrl+C or SIGTERM during the interpreter's shutdown after it (its cleanup) ends
    the process at once with that code: the command's work is done and written, and the signal turned it into a
    death by signal with no line (exit -2 or -15). A later cache removes the cold-tier folder it may leave."""
    global _finishing
    _finishing = True

    def _finished(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, RuntimeError, ValueError):  # a closed pipe, a flush it interrupted, a closed stream
                pass
        os._exit(code)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _finished)
    sys.exit(code)


def run_script(main) -> None:
    """Run a script's main() (benchmarks/*.py) and exit with its code: Ctrl+C or SIGTERM is one line and exit 130 (it
    was a KeyboardInterrupt traceback; SIGTERM, exit -15 and no line), and stdout and stderr are `ClosedPipeSafe`."""
    from agents.interrupts import sigterm_as_interrupt

    pipe_safe_streams()
    die_with_parent()  # a measuring process of benchmarks/agents.py: ends with it (it measured on, orphaned)
    try:
        with sigterm_as_interrupt():  # SIGTERM as Ctrl+C: it ended the script at once, exit -15, no line
            code = main()
    except KeyboardInterrupt:
        print("\ninterrupted; what is printed above was measured, nothing after it", file=sys.stderr, flush=True)
        code = 130
    finish(code or 0)
