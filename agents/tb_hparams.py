"""A run's records for TensorBoard's HParams tab (`TBLogger.hparams` writes them): the flattened config and the
session's start (config, start time) and end (status, end time). No experiment summary: see `session_summaries`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from numbers import Real

import numpy as np
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams.metadata import SESSION_END_INFO_TAG, SESSION_START_INFO_TAG
from torch.utils.tensorboard.summary import hparams as hparams_summaries

SESSION_TAGS = (SESSION_START_INFO_TAG, SESSION_END_INFO_TAG)
STATUSES = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE}  # a session end's


def flatten_hparams(hparams: Mapping, prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested config -> {"memory.slots": 64, ...} with values TensorBoard's hparams plugin accepts."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (bool, str)):
            flat[name] = value
        elif isinstance(value, np.bool_):  # not a Real: the last branch would record the text "True"
            flat[name] = bool(value)
        elif isinstance(value, Real):
            flat[name] = value.item() if isinstance(value, np.generic) else value
        else:  # None, lists, paths: shown as text
            flat[name] = str(value)
    return flat


def _edited(summary, edit):
    """The summary with its hparams plugin data changed by edit(HParamsPluginData)."""
    plugin_data = summary.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
    edit(data)
    plugin_data.content = data.SerializeToString()
    return summary


def session_summaries(flat: dict, metrics: dict[str, float], started: float, status: str | None) -> dict:
    """{tag: summary}: torch's session start (with the run's start time, `started`, seconds since the epoch) and,
    for a run that ended (`status` "success": it finished, "failure": an exception ended it), its session end
    (that status, the end time now); not its experiment summary.

    TensorBoard's HParams tab takes the first experiment summary it finds in the logdir as the whole table: with
    one per run, `tensorboard --logdir runs` showed the columns of one run picked arbitrarily (a ContinualShift run's
    hparams without LongDependency's `env.kwargs.distances`, its metrics without another env's), and a sweep's
    swept keys as not differing. Without one it builds the table from every run's session start (each key's type,
    values and whether it differs) and their scalar tags (the metric columns).
    torch tests isinstance(v, int) before bool, so True would be recorded as the number 1.0: corrected here. torch
    writes no start time (0, 1970) and always "success", also for a sweep trial that ASHA stopped early. The plugin's
    statuses are success, failure, running and unknown; such a trial neither finished nor failed, so it writes no
    end: the tab reads its status as unknown (its Status filter tells it from the finished trials), and a trial that
    is resumed later and finishes writes its end then (TensorBoard keeps the first record of a tag). A run or trial
    that an exception ended (diverged, a full disk) says failure: it had recorded nothing, so the tab did not list
    it at all (TBLogger.hparams writes its end in a file of its own, which a resumed or retried run removes)."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status={status!r}: expected None (no end) or one of {', '.join(map(repr, STATUSES))}")
    _, start, end = hparams_summaries(flat, metrics)

    def start_info(data):
        data.session_start_info.start_time_secs = started
        for name, value in flat.items():
            if isinstance(value, bool):
                data.session_start_info.hparams[name].bool_value = value

    def end_info(data):
        data.session_end_info.end_time_secs = time.time()
        data.session_end_info.status = STATUSES[status]

    summaries = {SESSION_START_INFO_TAG: _edited(start, start_info)}
    if status is not None:
        summaries[SESSION_END_INFO_TAG] = _edited(end, end_info)
    return summaries
