"""The metric names a sweep may optimise: the TensorBoard tags each evaluation of an env reports.

`agents.run.log_eval` writes eval/accuracy, eval/task_<j>/accuracy, cl/ACC|BWT|FWT|forgetting,
recall/accuracy_d<bucket> and recall/accuracy_delay<k>; which of them an env fills depends on its task count,
its largest distance and whether it reports delays. Checked before Ray starts, so a typo fails in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.cl_metrics import distance_buckets
from agents.config import ConfigError


@dataclass
class EnvFacts:
    """What decides the metric names a run of an env reports (`agents.run.log_eval`)."""

    env_id: str
    num_tasks: int
    max_distance: int


FAR_DISTANCE_ENVS = ("LongDependency",)  # envs ranked by the accuracy of their farthest distance bucket
DELAY_ENVS = ("NeedleRecall",)  # envs whose eval episodes fill recall/accuracy_delay<k>


def reported_metrics(facts: EnvFacts) -> list[str]:
    """The tags every evaluation of this env reports (recall/accuracy_delay<k>: pattern, k is the delay).

    Every memstream env reports info["distance"], bucketed up to its max_distance (a bucket no scored step
    fell in reports NaN)."""
    tags = ["eval/accuracy"] + [f"eval/task_{j}/accuracy" for j in range(facts.num_tasks)] + ["cl/ACC"]
    if facts.num_tasks > 1:
        tags += ["cl/BWT", "cl/FWT", "cl/forgetting"]
    tags += [f"recall/accuracy_d{int(e)}" for e in distance_buckets(facts.max_distance)]
    if facts.env_id.split("-")[0] in DELAY_ENVS:
        tags.append("recall/accuracy_delay<k>")
    return tags


def default_metric(facts: EnvFacts) -> str:
    """ContinualShift: cl/ACC; NeedleRecall: eval/accuracy (its evaluations are recall episodes on fresh
    facts); LongDependency: the accuracy of the farthest distance bucket."""
    family = facts.env_id.split("-")[0]
    if family in FAR_DISTANCE_ENVS:
        return f"recall/accuracy_d{int(distance_buckets(facts.max_distance)[-1])}"
    if family in DELAY_ENVS:
        return "eval/accuracy"
    return "cl/ACC"


def check_metric(metric: str, facts: EnvFacts) -> str:
    """`metric` if the env reports it, else one ConfigError line listing the ones it does."""
    tags = reported_metrics(facts)
    delay = "recall/accuracy_delay<k>" in tags and re.fullmatch(r"recall/accuracy_delay\d+", metric)
    if metric in tags or delay:
        return metric
    raise ConfigError(f"sweep.metric={metric!r}: {facts.env_id} does not report it; choose one of: "
                      f"{', '.join(tags)}")
