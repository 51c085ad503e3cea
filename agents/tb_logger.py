"""TensorBoard logging for the trainer: namespaced scalars, images, a custom-scalars layout and hparams.

Tags as README "TensorBoard" lists them (`train/loss`, `eval/task_<j>/accuracy`, `cl/ACC`, `recall/accuracy_d<b>`,
`memory/*`, `perf/tokens_per_s`). Everything goes into one run directory: hparams are written into the
same event file (torch's `add_hparams` would open a second writer, and without run_name="." a second run).
The read_* helpers read a run back (tests, and a quick look without the TensorBoard UI).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.writer import FileWriter

from agents.interrupts import interrupts_held
from agents.plots import figure_to_array
from agents.tb_hparams import SESSION_TAGS, flatten_hparams, session_summaries
from agents.tb_tags import CL_TAGS, DISTANCE_TAGS, TASK_ACCURACY_TAGS

_THREAD_HOOK = threading.excepthook
# TensorBoard's writer thread class (private: where a release renames it, its tracebacks print as before)
_WRITER_THREAD = getattr(event_file_writer, "_AsyncWriterThread", None)


def _writer_thread_failures_raised_by_the_caller(args) -> None:
    """threading.excepthook: TensorBoard's writer thread keeps the OSError it dies of (a full disk) and raises it in
    the caller's next write or flush, where the run reports it in one line; its own traceback is not printed
    as well (it came before that line). Every other thread's error is the previous hook's."""
    if _WRITER_THREAD is not None and isinstance(args.thread, _WRITER_THREAD) and issubclass(args.exc_type, OSError):
        return
    _THREAD_HOOK(args)


threading.excepthook = _writer_thread_failures_raised_by_the_caller


def custom_scalars_layout() -> dict:
    """Layout in torch's add_custom_scalars format: {category: {chart: ["Multiline", [tag regexes]]}}."""
    return {
        "Continual learning": {
            "forgetting curves": ["Multiline", [TASK_ACCURACY_TAGS]],
            "ACC, BWT, FWT, forgetting": ["Multiline", list(CL_TAGS)],
            "recall accuracy by distance": ["Multiline", [DISTANCE_TAGS]],
        },
        "Training": {
            "loss": ["Multiline", ["train/loss"]],
            "train accuracy": ["Multiline", ["train/accuracy"]],
        },
    }


def _wait_to_sort_last(log_dir: str) -> None:
    """Wait until a new event file of `log_dir` sorts after the files already there. TensorBoard reads a run's
    event files in name order and applies a resumed run's purge to what it read before; a file is named
    events.out.tfevents.<creation second>.<host>.<pid>..., so a run resumed within the second its killed run
    started (a short run, killed early) could sort first by pid and lose the killed run's points. At most ~1 s."""
    newest = 0
    for name in os.listdir(log_dir) if os.path.isdir(log_dir) else ():
        parts = name.split(".")
        if name.startswith("events.out.tfevents.") and len(parts) > 3 and parts[3].isdigit():
            newest = max(newest, int(parts[3]))
    while time.time() < newest + 1:
        time.sleep(min(0.05, newest + 1 - time.time() + 1e-3))


def _has_events(log_dir: str) -> bool:
    return os.path.isdir(log_dir) and any("tfevents" in name for name in os.listdir(log_dir))


FAILURE_SUFFIX = ".failure"  # the event file of a failed run's session end


def _write_failure(log_dir: str, summaries, step: int) -> None:
    """A failed run's session (its start, where the run had recorded none, and its end), in an event file of its own
    (`*.failure`): TensorBoard keeps the first record of a tag, whatever a resumed run's purge drops, so a failure
    written with the run's events outlasted a resume (or Tune's retry of the trial) that finished, which then still
    said failure, and a run started again in its folder with another config showed the failed start's config and
    start time. `_remove_failure` takes it back."""
    writer = FileWriter(log_dir, filename_suffix=FAILURE_SUFFIX)
    try:
        for summary in summaries:
            writer.add_summary(summary, step)
    finally:
        writer.close()


def _remove_failure(log_dir: str) -> None:
    for name in os.listdir(log_dir) if os.path.isdir(log_dir) else ():
        if "tfevents" in name and name.endswith(FAILURE_SUFFIX):
            os.remove(os.path.join(log_dir, name))


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an int >= 0 (e.g. training steps so far); got {step!r}")
    return int(step)


class TBLogger:
    """One TensorBoard run in `log_dir`; the custom-scalars layout is written first.

    resume_step: when resuming a run in the same directory, the step of the checkpoint it resumes from. The
    points the killed run logged after it are dropped by TensorBoard (no doubled curves; its purge_step is
    resume_step + 1); those at it stay: a checkpoint is written after its step's points are logged and flushed,
    and the resumed run logs from the next step on. What stays is read back, so that a run resumed from its
    last checkpoint (finished, or stopped while it wrote its report) does not log its report again: `image` skips
    a tag and step the run already holds, `hparams` the hparams it already recorded and the final points it holds.
    Without resume_step, the points of event files already in `log_dir` are dropped as well (a run started again in
    its folder); the files stay."""

    def __init__(self, log_dir: str | os.PathLike, hparams: Mapping | None = None,
                 resume_step: int | None = None):
        self.log_dir = os.fspath(log_dir)
        resume_step = None if resume_step is None else _check_step(resume_step)
        _remove_failure(self.log_dir)  # resumed (a Tune retry) or started again: the failure no longer stands
        self._last: dict[str, tuple[int, float]] = {}  # tag -> (step, value) of its latest point
        self._kept_images: set[tuple[str, int]] = set()  # (tag, step) of a resumed run's images
        self._kept_sessions: set[str] = set()  # the session records (start, end) the run holds: a resumed run's, and
        # those written since (a failure after the report's success is not recorded: the first record stays)
        self._started = time.time()  # the run's start, for the HParams tab (a resumed run's: its first event's)
        # a fresh run in a folder with event files (a run, or a Tune trial, started again after it stopped before its
        # first checkpoint): TensorBoard drops all their points (purge step 0), or it drew both starts over each other
        restart = resume_step is None and _has_events(self.log_dir)
        if resume_step is not None or restart:
            _wait_to_sort_last(self.log_dir)
        if resume_step is not None:
            # what the resumed run keeps: image() and hparams() must know it, or a run resumed from its last
            # checkpoint (stopped while it wrote its report, or already finished) logged its final cl/* points, its
            # images and its hparams a second time, and TensorBoard showed them twice
            self._last, self._kept_images, self._kept_sessions, started = _kept_records(self.log_dir, resume_step)
            self._started = started or self._started
        with interrupts_held():  # a Ctrl+C inside TensorBoard's writer could hang its closing flush (every method)
            purge = 0 if restart else None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=purge)
            if purge is not None:
                # TensorBoard takes a run's first SessionLog START as its start and purges at the later ones only;
                # the killed run's file holds none (a fresh writer writes none), so the purge_step START was taken
                # as the start and the killed run's points stayed, drawn twice. A second START at the same step is
                # the purge (where an earlier one already purged, it drops nothing more).
                self._writer.file_writer.add_event(Event(step=purge, session_log=SessionLog(status=SessionLog.START)))
            self._writer.add_custom_scalars(custom_scalars_layout())
        self._max_step = resume_step or 0
        self._pending_hparams = dict(hparams) if hparams is not None else None
        self._closed = False

    @interrupts_held()
    def scalars(self, values: Mapping[str, float | None], step: int) -> None:
        """Log each {tag: value} at `step`; None values (metric not applicable) are skipped."""
        step = _check_step(step)
        for tag, value in values.items():
            if value is None:
                continue
            if not isinstance(tag, str) or not tag:
                raise TypeError(f"scalar tags must be non-empty strings such as 'train/loss'; got {tag!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"scalar {tag!r} must be a number or None; got {value!r}") from None
            self._writer.add_scalar(tag, number, step)
            self._last[tag] = (step, number)
        self._max_step = max(self._max_step, step)

    @interrupts_held()
    def image(self, tag: str, figure_or_array: Figure | np.ndarray, step: int) -> None:
        """Log a matplotlib figure or an image array: (H, W, 3|4) or (H, W) uint8. A resumed run skips an image
        that the run holds already (this tag at this step, logged before it was resumed)."""
        step = _check_step(step)
        if (tag, step) in self._kept_images:
            self._max_step = max(self._max_step, step)
            return
        if isinstance(figure_or_array, Figure):
            image = figure_to_array(figure_or_array)  # (H, W, 3)
        else:
            image = np.asarray(figure_or_array)
            if image.dtype != np.uint8:
                raise TypeError(f"image {tag!r} must be uint8 (values 0-255); got dtype {image.dtype}")
            if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
                raise ValueError(f"image {tag!r} must have shape (H, W) or (H, W, 1|3|4); got {image.shape}")
        self._writer.add_image(tag, image, step, dataformats="HW" if image.ndim == 2 else "HWC")
        self._max_step = max(self._max_step, step)

    @interrupts_held()
    def hparams(self, hparams: Mapping | None, metrics: Mapping[str, float | None],
                status: str | None = "success") -> None:
        """Record the run's hyper-parameters and final metrics for the HParams dashboard, in this same run, with
        the run's start time and its end with `status` ("success"; "failure": an exception ended the run; None: no
        end, a sweep trial stopped early) (`session_summaries`). A failure's end goes into an event file of its own
        (`_write_failure`), which the run resumed or started again removes: its finish then says success.

        hparams: nested config (flattened to dotted keys; None and lists shown as text); defaults to the
        hparams given to the constructor. metrics: {tag: value}; None values are skipped. A metric whose
        tag already has this value as its latest point is not written again; others are written at the
        latest step so the dashboard can find them. A resumed run whose run had recorded its hparams before does
        not record them again (the first record stays; an end is added where the run had none)."""
        hparams = self._pending_hparams if hparams is None else hparams
        if not hparams:
            raise ValueError("hparams needs a non-empty dict of hyper-parameters (or pass them to TBLogger)")
        flat = flatten_hparams(hparams)
        final = {k: float(v) for k, v in metrics.items() if v is not None}
        failure = []
        for tag, summary in session_summaries(flat, final, self._started, status).items():
            if tag in self._kept_sessions:
                continue
            if status == "failure":
                failure.append(summary)
            else:
                self._writer.file_writer.add_summary(summary, self._max_step)
            self._kept_sessions.add(tag)
        if failure:
            _write_failure(self.log_dir, failure, self._max_step)
        # compared as stored (float32): the latest points of a resumed run are read back from its event file
        fresh = {k: v for k, v in final.items() if k not in self._last or np.float32(self._last[k][1]) != np.float32(v)}
        self.scalars(fresh, self._max_step)

    @interrupts_held()
    def flush(self) -> None:
        self._writer.flush()

    @interrupts_held()
    def close(self) -> None:
        """Flush and close the event file; further calls are no-ops."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> TBLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _load(log_dir: str | os.PathLike) -> plugin_event_accumulator.EventAccumulator:
    """A run read as the `tensorboard` server's Python loader reads it (its data provider's accumulator: every event
    file in name order, the resumed runs' purges applied as TensorBoard applies them, nothing sampled away). The
    older EventAccumulator purges at every SessionLog START, TensorBoard only from a run's second one on, so a reader
    built on it showed a resumed run's curves clean while TensorBoard drew them twice."""
    log_dir = os.fspath(log_dir)
    if not _has_events(log_dir):
        raise FileNotFoundError(f"no TensorBoard event file in {log_dir!r}")
    accumulator = plugin_event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    reader_log = logging.getLogger("tensorboard")
    reader_log.addFilter(_expected_purge)
    try:
        accumulator.Reload()
    finally:
        reader_log.removeFilter(_expected_purge)
    return accumulator


def _expected_purge(record: logging.LogRecord) -> bool:
    """Drops the reader's warning of the purge a resumed run asks for (points a stopped run logged after its last
    checkpoint): it speaks of a crashed TensorFlow job. Every other record passes."""
    return not record.getMessage().startswith("Detected out of order event.step")


def _series(accumulator, plugin: str) -> dict[str, list]:
    """{tag: [event, ...]} of one plugin's summaries (tensor events, in step order as TensorBoard keeps them)."""
    return {tag: accumulator.Tensors(tag) for tag in _plugin_content(accumulator, plugin)}


def _value(event) -> float:
    return tensor_util.make_ndarray(event.tensor_proto).item()


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of a run directory as TensorBoard shows them: {tag: [(step, value), ...]}."""
    return {tag: [(event.step, _value(event)) for event in events]
            for tag, events in _series(_load(log_dir), "scalars").items()}


def _kept_records(log_dir: str, last_step: int) -> tuple[dict[str, tuple[int, float]], set[tuple[str, int]],
                                                          set[str], float | None]:
    """What a run resumed at `last_step` keeps of `log_dir` (what is at or before that step): each scalar's latest
    point {tag: (step, value)}, its images {(tag, step)}, the tags of its hparams session records (summaries with no
    value of their own, which only this loader sees) and when it started (its first event, seconds since the epoch);
    ({}, set(), set(), None) without an event file."""
    if not _has_events(log_dir):
        return {}, set(), set(), None
    accumulator = _load(log_dir)

    def kept(plugin: str):
        for tag, events in _series(accumulator, plugin).items():
            yield tag, [event for event in events if event.step <= last_step]

    latest = {tag: (events[-1].step, _value(events[-1])) for tag, events in kept("scalars") if events}
    images = {(tag, event.step) for tag, events in kept("images") for event in events}
    try:
        started = accumulator.FirstEventTimestamp()
    except ValueError:  # event files with no event in them (a run killed as it opened its first)
        started = None
    return latest, images, {tag for tag, events in kept("hparams") if events and tag in SESSION_TAGS}, started


def read_images(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, int, int]]]:
    """All images of a run directory: {tag: [(step, height, width), ...]}."""
    # an image summary's tensor is [width, height, PNG bytes]
    return {tag: [(event.step, int(event.tensor_proto.string_val[1]), int(event.tensor_proto.string_val[0]))
                  for event in events]
            for tag, events in _series(_load(log_dir), "images").items()}


def _plugin_content(accumulator, plugin: str) -> dict[str, bytes]:
    """{tag: plugin metadata content} of one TensorBoard plugin; {} when the run has none of its data."""
    try:
        return accumulator.PluginTagToContent(plugin)
    except KeyError:  # the accumulator raises KeyError for a plugin that wrote nothing
        return {}


def read_layout(log_dir: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """The custom-scalars layout of a run: {category: {chart title: [tags]}}; {} when none was written."""
    layout: dict[str, dict[str, list[str]]] = {}
    for events in _series(_load(log_dir), "custom_scalars").values():
        proto = layout_pb2.Layout.FromString(events[-1].tensor_proto.string_val[0])
        for category in proto.category:
            charts = layout.setdefault(category.title, {})
            for chart in category.chart:
                charts[chart.title] = list(chart.multiline.tag)
    return layout


def read_hparams(log_dir: str | os.PathLike) -> dict[str, bool | float | str]:
    """The hyper-parameters recorded with TBLogger.hparams in a run directory; {} when none were written."""
    content = _plugin_content(_load(log_dir), "hparams").get(SESSION_START_INFO_TAG)
    if content is None:
        return {}
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind) if kind else None
    return values
