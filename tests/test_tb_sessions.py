"""A run's HParams session as TensorBoard's hparams plugin reads it: its status, start and end time."""

import math
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
        logger.hparams(None, {}, status=None)
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


@pytest.mark.parametrize("resume_step", [10, 0, None])  # at its last step, at its start, started again
def test_a_failed_run_says_failure_and_resumed_and_finished_it_says_success(tmp_path, resume_step):
    """A run an exception ended recorded nothing: the tab did not list it. Now its session says Failure, with its
    hparams and start. Resumed (a Tune retry) and finished it says Success: TensorBoard keeps a tag's first record,
    whatever a resume purges, so the failure is an event file of its own, which the resumed run removes."""
    from tensorboard.plugins.hparams import api_pb2

    from agents.tb_logger import read_hparams

    before = time.time()
    with TBLogger(tmp_path / "run", hparams=CONFIG) as logger:
        logger.scalars({"train/loss": 2.0}, 10)
        logger.hparams(None, {}, status="failure")
        logger.hparams(None, {}, status="success")  # the first end stays
    failed = hparams_sessions(tmp_path)["run"]
    assert failed.status == api_pb2.STATUS_FAILURE
    assert before <= failed.start_time_secs <= failed.end_time_secs <= time.time()
    assert [(value.name.tag, value.value) for value in failed.metric_values] == [("train/loss", 2.0)]
    assert read_hparams(tmp_path / "run")["memory.slots"] == CONFIG["memory"]["slots"]
    with TBLogger(tmp_path / "run", hparams=CONFIG, resume_step=resume_step) as logger:
        logger.scalars({"train/loss": 1.0}, 20)
        logger.hparams(None, {"cl/ACC": 0.5})
    finished = hparams_sessions(tmp_path)["run"]
    assert finished.status == api_pb2.STATUS_SUCCESS and finished.end_time_secs > failed.end_time_secs
    assert finished.start_time_secs == pytest.approx(failed.start_time_secs, abs=1.0)
    with pytest.raises(ValueError, match="status='failed': expected None .* 'failure'"):
        TBLogger(tmp_path / "other", hparams=CONFIG).hparams(None, {}, status="failed")


def diverge_at_the_second_update(monkeypatch):
    """The trainer's own check finds a NaN loss at its second update ("training diverged in episode 1 ...")."""
    from agents import objectives

    calls, loss = [], objectives.supervised_loss

    def nan_second(logits, chunk):
        calls.append(1)
        return loss(logits, chunk) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(objectives, "supervised_loss", nan_second)


def test_a_run_that_diverges_says_failure(tmp_path, monkeypatch, capsys):
    from tensorboard.plugins.hparams import api_pb2

    from agents import run
    from agents.tb_logger import read_hparams
    from tests.test_run import tiny

    diverge_at_the_second_update(monkeypatch)
    assert run.main(tiny("ContinualShift-v0", "memnet", tmp_path / "run", "train.lr=0.002")) == 2
    assert "error: training diverged in episode 1" in capsys.readouterr().err
    session = hparams_sessions(tmp_path)["run"]
    assert session.status == api_pb2.STATUS_FAILURE and 0 < session.start_time_secs <= session.end_time_secs
    assert read_hparams(tmp_path / "run")["train.lr"] == 0.002


def in_a_faked_trial(monkeypatch, trial_dir: str) -> list:
    """Tune's context faked for `run_trial` (no Ray is started); returns the list its reports go to (outside a
    Tuner, Tune's own report warns and drops them)."""
    from types import SimpleNamespace

    from ray import tune

    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: trial_dir))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    return reports


def test_a_sweep_trial_that_raises_says_failure(tmp_path, monkeypatch):
    """A Tune trial in its trainable (Tune's context faked: no Ray is started) that diverges: Failure, and its last
    report says it diverged."""
    from omegaconf import OmegaConf
    from tensorboard.plugins.hparams import api_pb2

    from agents.config import load_config
    from agents.tb_logger import read_hparams
    from agents.tune_trial import run_trial
    from tests.test_run import tiny

    diverge_at_the_second_update(monkeypatch)
    reports = in_a_faked_trial(monkeypatch, "/elsewhere/t0_lr=0.003")
    base = OmegaConf.to_container(load_config(tiny("ContinualShift-v0", "memnet", tmp_path)), resolve=True)
    # a diverged trial ends with a last report saying so (not raised: Tune would retry it, to diverge again)
    run_trial({"train.lr": 0.003}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    assert [r["episode"] for r in reports] == [0, 0]  # the untrained evaluation, then the divergence
    assert reports[-1]["diverged"].startswith("training diverged in episode 1") and math.isnan(reports[-1]["cl/ACC"])
    session = hparams_sessions(tmp_path / "sweep")["t0_lr=0.003"]
    assert session.status == api_pb2.STATUS_FAILURE and 0 < session.start_time_secs <= session.end_time_secs
    assert read_hparams(tmp_path / "sweep" / "t0_lr=0.003")["train.lr"] == 0.003


def test_a_run_started_again_after_a_failure_shows_its_own_hparams(tmp_path):
    """A run that failed before its first checkpoint (diverged) and is started again in its folder drops the first
    start's points (purge step 0) and its failure; its HParams session is the new run's: the failed start's session
    start (its train.lr, its start time) stayed in the run's event file, and TensorBoard keeps a tag's first record."""
    from agents.tb_logger import read_hparams, read_scalars

    with TBLogger(tmp_path) as logger:  # the first start: diverged in episode 1
        logger.scalars({"train/loss": 9.0}, 3)
        logger.hparams({"train": {"lr": 1e30}}, {}, status="failure")
    assert read_hparams(tmp_path)["train.lr"] == 1e30 and hparams_sessions(tmp_path)["."].status == 2  # FAILURE
    time.sleep(1.1)
    began = time.time()
    with TBLogger(tmp_path) as logger:  # started again afresh in the same folder, with a lower learning rate
        logger.scalars({"train/loss": 0.5}, 3)
        logger.hparams({"train": {"lr": 1e-3}}, {"cl/ACC": 0.5})
    assert read_scalars(tmp_path)["train/loss"] == [(3, 0.5)]
    assert read_hparams(tmp_path)["train.lr"] == 1e-3
    session = hparams_sessions(tmp_path)["."]
    assert session.status == 1 and session.start_time_secs >= began - 0.5  # SUCCESS, its own start


def test_a_sweep_trial_whose_memnet_overflows_ends_diverged_not_retried(tmp_path, monkeypatch):
    """MemNet's overflow check (agents.memnet_store) raises FloatingPointError, which agents.run says as "training
    diverged ..."; raised into Ray, a retry from the same checkpoint and seed overflowed again (for ever under
    sweep.max_failures=-1). The trial ends as diverged, as for TrainingDiverged."""
    from omegaconf import OmegaConf

    from agents import run
    from agents.config import load_config
    from agents.tune_trial import run_trial
    from tests.test_run import tiny

    def overflow(*args, **kwargs):
        raise FloatingPointError("MemNet: store keys of norm 1e+39 overflow float32 inner products")

    monkeypatch.setattr(run, "fit", overflow)
    reports = in_a_faked_trial(monkeypatch, "/elsewhere/t0")
    base = OmegaConf.to_container(load_config(tiny("ContinualShift-v0", "memnet", tmp_path)), resolve=True)
    run_trial({}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    assert reports[-1]["diverged"].startswith("training diverged in episode 1 (MemNet: store keys of norm 1e+39")
    assert math.isnan(reports[-1]["cl/ACC"])
