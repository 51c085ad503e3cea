"""The scalar tags of an evaluation (README "TensorBoard"), named here once: for the writer (`agents.run.log_eval`),
the tags a sweep checks its metric against (`agents.tune_metrics`) and the Custom Scalars layout's regexes
(`agents.tb_logger`). No imports: the sweep's driver reads them without loading TensorBoard."""

from __future__ import annotations

CL_TAGS = ("cl/ACC", "cl/BWT", "cl/FWT", "cl/forgetting")
# a training episode's scalars (`agents.run.train_scalars`), reported to Tune with the evaluation that follows them
TRAIN_TAGS = ("train/loss", "train/accuracy", "perf/tokens_per_s", "perf/act_ms", "perf/chunk_forward_ms",
              "perf/update_ms")
# MemNet's per-chunk memory metrics (`MemNet._scalar_metrics`), logged as memory/<name>, by the part that reports them
SLOT_METRICS = ("read_entropy", "write_rate")
STORE_METRICS = ("store_hit_rate", "memory_share_mean", "store_entries")
MEMORY_TAGS = tuple(f"memory/{name}" for name in SLOT_METRICS + STORE_METRICS)


def memory_tags(agent: str, slots: int, store: bool) -> tuple[str, ...]:
    """The memory/<name> tags a run of this agent reports: MemNet's slot bank (slots > 0) and store parts'."""
    if agent != "memnet":
        return ()
    return tuple(f"memory/{name}" for name in (SLOT_METRICS if slots > 0 else ()) + (STORE_METRICS if store else ()))


def eval_accuracy_tag(task: int) -> str:
    """The scalar tag of task j's eval accuracy: one point of its forgetting curve."""
    return f"eval/task_{task}/accuracy"


def distance_tag(bucket: int) -> str:
    """Accuracy on the scored steps whose distance falls in the bucket with this upper bound."""
    return f"recall/accuracy_d{bucket}"


def delay_tag(delay: int) -> str:
    """NeedleRecall: recall of the facts shown this many episodes before."""
    return f"recall/accuracy_delay{delay}"


# regexes (TensorBoard matches them from a tag's start): the same layout for any task count, since TensorBoard merges
# the runs' layouts and keeps a chart once only where the runs' charts are equal; one tag list per run showed a
# "forgetting curves" chart per task count seen in `--logdir runs` (a 1-task LongDependency run's beside a 5-task one's)
TASK_ACCURACY_TAGS = r"eval/task_\d+/accuracy$"
DISTANCE_TAGS = r"recall/accuracy_d\d+$"  # not NeedleRecall's accuracy_delay<k>
