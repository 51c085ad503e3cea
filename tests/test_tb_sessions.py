"""A run's HParams session as TensorBoard's hparams plugin reads it: its status, start and end time."""

import time

import pytest

from agents.tb_logger import TBLogger
from tests.test_tb_logger import CONFIG


def hparams_sessions(logdir) -> dict:
    """{run: its api_pb2.Session} as `tensorboard --logdir <logdir>`'s HParams tab lists them (every status allowed,
    as the tab's Status filter is by default), computed by TensorBoard's own hparams plugin."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    runs = plugin_event_multiplexer.EventMultiplexer(size_guidance={"tensors": 0})
    runs.AddRunsFromDirectory(str(logdir))
    runs.Reload()
    tb = backend_context.Context(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=runs, data_provider=data_provider.MultiplexerDataProvider(runs, str(logdir))))
    request = api_pb2.ListSessionGroupsRequest(allowed_statuses=api_pb2.Status.values(), slice_size=100)
    groups = list_session_groups.Handler(context.RequestContext(), tb, "", request).run().session_groups
    return {session.name: session for group in groups for session in group.sessions}


def test_a_finished_run_says_success_with_its_real_start_and_end(tmp_path):
    """torch's records gave every run start time 0 (1970) and no end time."""
    from tensorboard.plugins.hparams import api_pb2

    before = time.time()
    with TBLogger(tmp_path / "run", hparams=CONFIG) as logger:
        logger.scalars({"train/loss": 1.0}, 10)
        logger.hparams(None, {"cl/ACC": 0.5})
    after = time.time()
    session = hparams_sessions(tmp_path)["run"]
    assert session.status == api_pb2.STATUS_SUCCESS
    assert before <= session.start_time_secs <= session.end_time_secs <= after
    assert [(value.name.tag, value.value) for value in session.metric_values if value.name.tag == "cl/ACC"] == [
        ("cl/ACC", 0.5)]


def test_a_run_stopped_early_is_not_a_success_and_its_resumed_end_is(tmp_path):
    """A sweep trial ASHA stopped wrote torch's end record, "success", like a finished one. Now it writes none (the
    plugin has no status for it; the tab reads unknown); resumed later and finished, it says success, and its start
    stays the first start's."""
    from tensorboard.plugins.hparams import api_pb2

    before = time.time()
    with TBLogger(tmp_path / "trial", hparams=CONFIG) as logger:
        logger.scalars({"cl/ACC": 0.25}, 20)
        logger.hparams(None, {}, finished=False)
    stopped = hparams_sessions(tmp_path)["trial"]
    assert stopped.status == api_pb2.STATUS_UNKNOWN and stopped.end_time_secs == 0
    assert before <= stopped.start_time_secs <= time.time()
    assert [(value.name.tag, value.value) for value in stopped.metric_values] == [("cl/ACC", 0.25)]
    with TBLogger(tmp_path / "trial", hparams=CONFIG, resume_step=20) as logger:
        logger.scalars({"cl/ACC": 0.75}, 40)
        logger.hparams(None, {"cl/ACC": 0.75})
    finished = hparams_sessions(tmp_path)["trial"]
    assert finished.status == api_pb2.STATUS_SUCCESS
    assert finished.start_time_secs == pytest.approx(stopped.start_time_secs, abs=1.0)  # the first start's
    assert finished.end_time_secs >= finished.start_time_secs
    assert [(value.name.tag, value.value) for value in finished.metric_values] == [("cl/ACC", 0.75)]
