"""TBLogger writes the README "TensorBoard" tags, images, the custom-scalars layout and hparams into one run."""

import os
from pathlib import Path

import numpy as np
import pytest

from agents.plots import plot_accuracy_matrix
from agents.tb_logger import TBLogger, read_hparams, read_images, read_layout, read_scalars
from agents.tb_tags import CL_TAGS, TASK_ACCURACY_TAGS, eval_accuracy_tag

CONFIG = {"env": "ContinualShift-v0", "agent": "memnet", "seed": 3,
          "memory": {"slots": 64, "fusion": "gated", "store": True, "top_k": None}, "train": {"lr": 3e-4}}


@pytest.fixture
def finished_run(tmp_path):
    """A small run: 3 tasks, training scalars, eval curves, cl metrics, two images and hparams."""
    log_dir = tmp_path / "run"
    with TBLogger(log_dir, hparams=CONFIG) as logger:
        for step in range(0, 50, 10):
            logger.scalars({"train/loss": 2.0 / (step + 1), "train/accuracy": step / 100}, step)
            logger.scalars({eval_accuracy_tag(j): 0.3 * j + step / 100 for j in range(3)}, step)
        logger.scalars({"cl/ACC": 0.61, "cl/BWT": -0.2, "cl/FWT": None, "cl/forgetting": 0.25,
                        "recall/accuracy_d64": 0.5, "perf/tokens_per_s": 21000.0}, 40)
        logger.image("cl/accuracy_matrix", plot_accuracy_matrix([[0.9, 0.1], [0.4, 0.8]], tmp_path / "R.png"), 40)
        logger.image("memory/slot_usage", np.full((8, 16, 3), 200, np.uint8), 40)
        logger.image("memory/slot_usage_gray", np.arange(32, dtype=np.uint8).reshape(4, 8), 40)
        logger.hparams(None, {"cl/ACC": 0.61, "cl/FWT": None, "accuracy": 0.7})
    return log_dir


def test_scalars_read_back_with_steps(finished_run):
    scalars = read_scalars(finished_run)
    assert [step for step, _ in scalars["train/loss"]] == [0, 10, 20, 30, 40]
    assert scalars["train/loss"][1][1] == pytest.approx(2.0 / 11)
    assert scalars[eval_accuracy_tag(2)][-1] == (40, pytest.approx(1.0))
    assert scalars["recall/accuracy_d64"] == [(40, 0.5)]
    assert scalars["perf/tokens_per_s"] == [(40, 21000.0)]
    assert "cl/FWT" not in scalars  # None = not applicable: skipped, not logged as 0 or NaN


def test_hparams_stay_in_the_same_run(finished_run):
    entries = os.listdir(finished_run)
    assert all(os.path.isfile(finished_run / name) and "tfevents" in name for name in entries)
    hparams = read_hparams(finished_run)
    assert hparams["memory.slots"] == 64 and hparams["memory.fusion"] == "gated"
    assert hparams["memory.store"] is True and hparams["memory.top_k"] == "None"
    assert hparams["train.lr"] == pytest.approx(3e-4) and hparams["env"] == "ContinualShift-v0"
    scalars = read_scalars(finished_run)
    assert scalars["cl/ACC"] == [(40, pytest.approx(0.61))]  # already logged with this value: not duplicated
    assert scalars["accuracy"] == [(40, pytest.approx(0.7))]  # new final metric: at the latest step


def custom_scalars_tab(logdir) -> dict[str, list[tuple[str, list[str]]]]:
    """What `tensorboard --logdir <logdir>` shows in its Custom Scalars tab: {category: [(chart, its tags that some
    run has, as the plugin matches them)]}, with the runs' layouts merged by TensorBoard's plugin."""
    import json
    import re

    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar import custom_scalars_plugin

    runs = plugin_event_multiplexer.EventMultiplexer(size_guidance={"tensors": 0})
    runs.AddRunsFromDirectory(str(logdir))
    runs.Reload()
    plugin = custom_scalars_plugin.CustomScalarsPlugin(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=runs, data_provider=data_provider.MultiplexerDataProvider(runs, str(logdir))))
    tags = {tag for run in runs.Runs() for tag in read_scalars(Path(logdir) / run)}
    return {category["title"]: [(chart["title"], sorted(tag for tag in tags if any(
                re.match(regex, tag) for regex in chart["multiline"]["tag"])))
                for chart in category["chart"]]
            for category in json.loads(plugin.layout_impl(context.RequestContext(), ""))["category"]}


def test_custom_scalars_draw_every_tasks_forgetting_curve_in_one_chart_for_many_runs(tmp_path):
    """Each run's layout listed its own tasks' tags, and TensorBoard merges equal charts only: `--logdir runs` showed
    one "forgetting curves" chart per task count. NeedleRecall's recall/accuracy_delay<k> was drawn as a distance."""
    for name, tasks in (("a", 1), ("b", 3)):
        with TBLogger(tmp_path / name) as logger:
            logger.scalars({eval_accuracy_tag(j): 0.5 for j in range(tasks)} | {"eval/accuracy": 0.5, "cl/ACC": 0.5,
                           "recall/accuracy_d64": 0.5, "recall/accuracy_delay1": 0.5, "train/loss": 1.0}, 10)
    tab = custom_scalars_tab(tmp_path)
    assert tab["Continual learning"] == [("forgetting curves", [eval_accuracy_tag(j) for j in range(3)]),
                                         ("ACC, BWT, FWT, forgetting", ["cl/ACC"]),
                                         ("recall accuracy by distance", ["recall/accuracy_d64"])]
    assert tab["Training"] == [("loss", ["train/loss"]), ("train accuracy", [])]
    assert read_layout(tmp_path / "b")["Continual learning"]["ACC, BWT, FWT, forgetting"] == list(CL_TAGS)


def test_images_read_back(finished_run, tmp_path):
    images = read_images(finished_run)
    assert images["memory/slot_usage"] == [(40, 8, 16)]
    assert images["memory/slot_usage_gray"] == [(40, 4, 8)]
    (step, height, width), = images["cl/accuracy_matrix"]
    assert step == 40 and height > 100 and width > 100


def test_run_without_hparams_has_none(tmp_path):
    with TBLogger(tmp_path) as logger:
        logger.scalars({"train/loss": 1.0}, 0)
    assert read_hparams(tmp_path) == {}
    assert read_layout(tmp_path)["Continual learning"]["forgetting curves"] == [TASK_ACCURACY_TAGS]


def test_close_is_idempotent_and_flush_makes_data_readable(tmp_path):
    logger = TBLogger(tmp_path)
    logger.scalars({"train/loss": 0.5}, 7)
    logger.flush()
    assert read_scalars(tmp_path)["train/loss"] == [(7, 0.5)]
    logger.close()
    logger.close()


def test_resume_keeps_the_checkpoint_step_and_drops_the_points_after_it(tmp_path):
    with TBLogger(tmp_path) as logger:  # checkpoint written at step 20, killed after logging 40
        for step in range(0, 50, 10):
            logger.scalars({"train/loss": float(step)}, step)
    with TBLogger(tmp_path, resume_step=20) as logger:  # the resumed run logs from step 30 on
        for step in range(30, 60, 10):
            logger.scalars({"train/loss": step + 0.5}, step)
    assert read_scalars(tmp_path)["train/loss"] == [(0, 0.0), (10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5),
                                                    (50, 50.5)]


def test_a_run_resumed_twice_shows_each_step_once_as_tensorboard_draws_it(tmp_path):
    """read_scalars reads as the `tensorboard` server does, which purges from a run's second SessionLog START on: a
    killed run's points after its checkpoint were drawn beside the resumed run's (a zig-zag at the first resume)."""
    for start, resume_step, stop in ((0, None, 40), (30, 20, 50), (40, 30, 60)):  # killed twice, 10 past a checkpoint
        with TBLogger(tmp_path, resume_step=resume_step) as logger:
            for step in range(start, stop + 1, 10):
                logger.scalars({"train/loss": step + start}, step)  # which start logged it
    assert read_scalars(tmp_path)["train/loss"] == [(0, 0), (10, 10), (20, 20), (30, 60), (40, 80), (50, 90), (60, 100)]


def test_a_run_started_again_in_its_folder_shows_only_its_new_points(tmp_path):
    """A run (or a Tune trial) stopped before its first checkpoint and started afresh in the same folder: both
    starts' curves were drawn over each other."""
    with TBLogger(tmp_path) as logger:  # stopped after logging step 40, no checkpoint
        for step in range(0, 50, 10):
            logger.scalars({"train/loss": float(step), "eval/task_0/accuracy": 0.5}, step)
    with TBLogger(tmp_path) as logger:
        for step in range(0, 30, 10):
            logger.scalars({"train/loss": step + 0.5}, step)
    scalars = read_scalars(tmp_path)
    assert scalars["train/loss"] == [(0, 0.5), (10, 10.5), (20, 20.5)]
    assert scalars.get("eval/task_0/accuracy", []) == []  # a tag only the first start logged: no points
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # the first start's file is kept


def test_numpy_and_torch_scalars_are_accepted(tmp_path):
    import torch

    with TBLogger(tmp_path) as logger:
        logger.scalars({"a/np": np.float32(0.25), "a/torch": torch.tensor(0.75), "a/int": 3}, np.int64(5))
    scalars = read_scalars(tmp_path)
    assert scalars["a/np"] == [(5, 0.25)] and scalars["a/torch"] == [(5, 0.75)] and scalars["a/int"] == [(5, 3.0)]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda lg: lg.scalars({"train/loss": 1.0}, -1), ValueError, "step must be an int >= 0"),
        (lambda lg: lg.scalars({"train/loss": 1.0}, 1.5), ValueError, "step must be an int >= 0"),
        (lambda lg: lg.scalars({"train/loss": "high"}, 0), TypeError, "'train/loss' must be a number or None"),
        (lambda lg: lg.scalars({3: 1.0}, 0), TypeError, "tags must be non-empty strings"),
        (lambda lg: lg.image("img", np.zeros((4, 4, 3)), 0), TypeError, "must be uint8"),
        (lambda lg: lg.image("img", np.zeros((4, 4, 2), np.uint8), 0), ValueError, r"\(H, W, 1\|3\|4\)"),
        (lambda lg: lg.hparams(None, {"accuracy": 0.5}), ValueError, "non-empty dict of hyper-parameters"),
    ],
)
def test_bad_input_gives_clear_errors(tmp_path, call, error, message):
    with TBLogger(tmp_path) as logger, pytest.raises(error, match=message):
        call(logger)


def test_bad_constructor_and_missing_run(tmp_path):
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        TBLogger(tmp_path / "x", resume_step=-5)
    with pytest.raises(FileNotFoundError, match="no TensorBoard event file"):
        read_scalars(tmp_path / "does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorBoard event file"):
        read_scalars(tmp_path / "empty")


def test_a_runs_hparams_hold_its_env_options_flattened(tmp_path):
    """The HParams tab holds the flattened config, env.kwargs.* included (a sweep over an env option could not be
    compared there): ints, bools and strings as themselves, None and lists as text."""
    from agents.config import load_config
    from agents.report import hparams_of

    cfg = load_config(["env=ContinualShift-v0", "env.kwargs.num_tasks=3", "env.kwargs.task_visible=true",
                       "memory.slots=32"])
    with TBLogger(tmp_path) as logger:
        logger.hparams(hparams_of(cfg), {"cl/ACC": 0.5})
    hparams = read_hparams(tmp_path)
    assert hparams["env.kwargs.num_tasks"] == 3 and hparams["env.kwargs.task_visible"] is True
    assert hparams["env.kwargs.shift"] == "abrupt" and hparams["env.kwargs.shift_window"] == "None"
    assert hparams["env"] == "ContinualShift-v0" and hparams["memory.slots"] == 32  # as before
    assert not any(name.startswith(("train.progress", "run_dir", "runs_root")) for name in hparams)


def hparams_tab(logdir) -> tuple[dict, list[str]]:
    """What `tensorboard --logdir <logdir>` shows in its HParams tab: ({hparam column: its HParamInfo}, [metric
    column tags]), computed by TensorBoard's hparams plugin over every run below logdir."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    runs = plugin_event_multiplexer.EventMultiplexer(size_guidance={"tensors": 0})
    runs.AddRunsFromDirectory(str(logdir))
    runs.Reload()
    tb = backend_context.Context(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=runs, data_provider=data_provider.MultiplexerDataProvider(runs, str(logdir))))
    request = context.RequestContext()
    experiment = tb.experiment_from_metadata(request, "", True, tb.hparams_metadata(request, ""),
                                             tb.hparams_from_data_provider(request, "", None))
    return {info.name: info for info in experiment.hparam_infos}, [info.name.tag for info in experiment.metric_infos]


def test_the_hparams_tab_of_many_runs_lists_every_runs_hparams_and_metrics(tmp_path):
    """Each run wrote an experiment summary and TensorBoard takes the first it finds as the whole table: `tensorboard
    --logdir runs` showed one run's columns (not another env's options or metrics) and nothing as differing."""
    from tensorboard.plugins.hparams import api_pb2

    runs = {"ContinualShift-v0/memnet/s0": (CONFIG | {"env.kwargs": {"keys_per_task": 8}}, {"cl/ACC": 0.5}),
            "LongDependency-v0/lstm/s0": (CONFIG | {"agent": "lstm", "env.kwargs": {"distances": [1, 4]}},
                                          {"recall/accuracy_d4": 0.25})}
    for name, (hparams, final) in runs.items():
        with TBLogger(tmp_path / name, hparams=hparams) as logger:
            logger.scalars({"train/loss": 1.0}, 10)
            logger.hparams(None, final)
    columns, metrics = hparams_tab(tmp_path)
    assert {"env.kwargs.keys_per_task", "env.kwargs.distances", "memory.slots"} <= set(columns)
    assert columns["agent"].differs
    assert sorted(value.string_value for value in columns["agent"].domain_discrete.values) == ["lstm", "memnet"]
    assert not columns["memory.slots"].differs
    assert columns["memory.store"].type == api_pb2.DataType.DATA_TYPE_BOOL  # torch declared True as a number
    assert columns["memory.slots"].type == api_pb2.DataType.DATA_TYPE_FLOAT64
    assert columns["memory.fusion"].type == api_pb2.DataType.DATA_TYPE_STRING
    assert {"cl/ACC", "recall/accuracy_d4", "train/loss"} <= set(metrics)


def test_final_metrics_of_a_scalars_only_run_land_at_its_latest_step_and_numpy_hparams_are_numbers(tmp_path):
    """No image moved the latest step here: the final metrics go where the run's curves end (step 30), not at 0.
    numpy scalars (a swept value Tune sampled) are recorded as numbers; torch refuses an np.int64 itself."""
    with TBLogger(tmp_path, hparams={"slots": np.int64(64), "lr": np.float32(0.5)}) as logger:
        for step in (10, 30):
            logger.scalars({"train/loss": 1.0 / step}, step)
        logger.hparams(None, {"accuracy": 0.7})
    assert read_scalars(tmp_path)["accuracy"] == [(30, pytest.approx(0.7))]
    assert read_hparams(tmp_path) == {"slots": 64.0, "lr": 0.5}


def test_a_run_resumed_after_its_report_records_its_hparams_and_final_points_once(tmp_path):
    """Resumed from its last checkpoint (step 20) after the report was logged: the hparams are not recorded again
    (TensorBoard listed the run twice), cl/ACC is not logged again, and a final number it lacked lands at step 20,
    its latest, not at 0."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    with TBLogger(tmp_path, hparams=CONFIG) as logger:
        logger.scalars({"train/loss": 1.0}, 20)
        logger.hparams(None, {"cl/ACC": 0.75})
    with TBLogger(tmp_path, hparams=CONFIG, resume_step=20) as logger:
        logger.hparams(None, {"cl/ACC": 0.75, "eval/accuracy": 0.6})
    scalars = read_scalars(tmp_path)
    assert scalars["cl/ACC"] == [(20, 0.75)]
    assert scalars["eval/accuracy"] == [(20, pytest.approx(0.6))]
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert len(accumulator.Tensors("_hparams_/session_start_info")) == 1
    assert read_hparams(tmp_path)["seed"] == 3


def test_a_runs_report_images_in_tensorboard_are_its_plot_files(memnet_run):
    """TensorBoard's accuracy matrix, slot usage and slot survival are the pixels of plots/<name>.png: they were the
    figure drawn a second time, whose constrained layout changed ~6% of the pixels (and which cost a draw each)."""
    import io

    from PIL import Image

    from agents.plots import png_pixels
    from agents.tb_logger import _load, _series

    series = _series(_load(memnet_run), "images")
    for name in ("accuracy_matrix", "slot_usage", "slot_survival"):
        (event,) = series[f"plots/{name}"]
        logged = np.asarray(Image.open(io.BytesIO(event.tensor_proto.string_val[2])).convert("RGB"))  # (H, W, 3)
        assert np.array_equal(logged, png_pixels(memnet_run / "plots" / f"{name}.png")), name
