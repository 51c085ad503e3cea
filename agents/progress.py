"""A run's progress on stderr: tqdm's bar on a terminal, plain lines in a log file.

A bar redrawn with carriage returns is one endless line in a file (`> run.log 2>&1`, a cluster job's log, CI):
every redraw of the whole run kept, unreadable in an editor and in `tail`. Where stderr is not a terminal,
`EvalLines` writes one line when the evaluation before training starts (it can take a minute), one after the first
episode trained after it (an early estimate of the time left), then one after each episode that ended in an evaluation
(and at least every `every` seconds), the bar's fields as text.
"""

from __future__ import annotations

import sys
import time


def progress_bar(total: int, initial: int, desc: str, enabled: bool, stream=None):
    """What `agents.run.fit` reports to: tqdm's bar where `stream` (stderr) is a terminal, `EvalLines` elsewhere,
    nothing (a disabled bar) with train.progress=false. Both take set_postfix_str / set_postfix / update / reset /
    close."""
    stream = sys.stderr if stream is None else stream
    enabled = enabled and stream is not None  # stderr closed (2>&-): Python's sys.stderr is None, nowhere to report
    if enabled and not _is_terminal(stream):
        return EvalLines(total, initial, desc, stream)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="ep", desc=desc, dynamic_ncols=True,
                file=stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class EvalLines:
    """The progress bar's fields as one line per evaluation:

        ContinualShift-v0/memnet: episode 8/20, 0:07 in, ~0:10 left: acc=91.2%, eval=55.0%, loss=0.412, task=1
    """

    def __init__(self, total: int, initial: int, desc: str, stream, every: float = 60.0):
        self.total, self.n, self.desc, self.stream, self.every = total, initial, desc, stream, every
        self.start = self.last = time.monotonic()
        self.done_here = 0  # episodes trained since `start` (the rate of this process, not of a resumed run's past)
        self.postfix, self.evaluated = "", False

    def set_postfix_str(self, text: str) -> None:
        if text.startswith("evaluating every task before training"):  # the one long wait with no line yet
            self._write(text)
        self.evaluated = self.evaluated or text.startswith("evaluating")

    def set_postfix(self, **fields) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in fields.items())

    def reset(self) -> None:  # after the evaluation before training: the rate counts training from here
        self.start = self.last = time.monotonic()  # `evaluated` stays set: the first episode's line gives the ETA

    def update(self, n: int = 1) -> None:
        self.n, self.done_here = self.n + n, self.done_here + n
        now = time.monotonic()
        if self.evaluated or self.n >= self.total or now - self.last >= self.every:
            elapsed = now - self.start
            left = elapsed / self.done_here * (self.total - self.n) if self.n < self.total else 0.0
            when = f"{_clock(elapsed)} in" + (f", ~{_clock(left)} left" if self.n < self.total else "")
            self._write(f"episode {self.n}/{self.total}, {when}" + (f": {self.postfix}" if self.postfix else ""))
            self.evaluated, self.last = False, now

    def close(self) -> None:
        self.stream.flush()

    def _write(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    """1:05:09, 7:03, 0:07 (as tqdm writes times)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
