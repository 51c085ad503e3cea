"""The metric names a sweep may optimise: the TensorBoard tags each evaluation of an env reports.

`agents.run.log_eval` writes eval/accuracy, eval/task_<j>/accuracy, cl/ACC|BWT|FWT|forgetting,
recall/accuracy_d<bucket> and recall/accuracy_delay<k>; which of them an env fills depends on its task count,
its largest distance and whether it reports delays. The training episode before an evaluation adds train/*,
perf/* (every agent; perf/act_ms where it acts step by step) and memory/<name> (MemNet's slot bank and store parts:
`agents.tb_tags.memory_tags`).
Checked before Ray starts, so a typo fails in one line.

A sweep may change those from trial to trial (`train.episodes`, `train.eval_repeats`, `env.kwargs.*`: the run's
length sets ContinualShift's largest distance, an env option its tasks or distances), so the checks look at every
corner of those swept values (`sweep_facts`): a metric any trial reports is allowed, the default is one that every
trial reports, and ASHA's `max_t` is the longest trial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from agents.cl_metrics import distance_buckets
from agents.config import ConfigError
from agents.tb_tags import (
    CL_TAGS,
    MEMORY_TAGS,
    TRAIN_TAGS,
    delay_tag,
    distance_tag,
    eval_accuracy_tag,
    memory_tags,
)


@dataclass
class EnvFacts:
    """What decides the metric names a run of an env reports (`agents.run.log_eval`)."""

    env_id: str
    num_tasks: int
    max_distance: int
    far_edge: int | None = None  # FAR_DISTANCE_ENVS: the farthest bucket an evaluation fills (`filled_edges`)
    delays: tuple[int, ...] = ()  # DELAY_ENVS: the delays an evaluation's recalls come at (`eval_delays`)
    filled: tuple[int, ...] | None = None  # FAR_DISTANCE_ENVS: the buckets an evaluation fills at all (None: unknown)
    memory: tuple[str, ...] = ()  # the memory/<name> tags of the trial's agent and memory parts (`memory_tags`)
    steps: bool = False  # the trial acts step by step (perf/act_ms: chunk acting makes no acting call)


RUN_KEYS = ("train.episodes", "train.eval_repeats")  # swept with env.kwargs.*: they set a trial's tags and length
MEMORY_PART_KEYS = ("memory.slots", "memory.store")  # ... and these its memory/<name> tags
ACTING_KEYS = ("train.acting", "model.dropout", "train.mode")  # ... and these whether it reports perf/act_ms
PRESENCE_KEYS = ("memory.slots", "memory.store", "model.dropout")  # of these only 0 / not 0 tells trials apart
LOWER_IS_BETTER = ("cl/forgetting", "train/loss", "perf/act_ms", "perf/chunk_forward_ms", "perf/update_ms")
TRAINING_PREFIXES = ("train/", "perf/", "memory/")  # a training episode's tags, reported with the evaluation after it
FAR_DISTANCE_ENVS = ("LongDependency",)  # envs ranked by the accuracy of their farthest distance bucket
FAR_SHARE = 0.02  # ... that holds at least this share of an evaluation's scored steps (a tail bucket is too noisy)
DELAY_ENVS = ("NeedleRecall",)  # envs whose eval episodes fill recall/accuracy_delay<k>


def reported_metrics(facts: EnvFacts) -> list[str]:
    """The tags every evaluation of this env reports (recall/accuracy_delay<k> for each of its `delays`).

    Every memstream env reports info["distance"], bucketed up to its max_distance; a bucket no scored step falls
    in reports NaN, so where an evaluation's distances are known (`filled`) only the buckets they fill count."""
    tags = ["eval/accuracy"] + [eval_accuracy_tag(j) for j in range(facts.num_tasks)] + [CL_TAGS[0]]
    if facts.num_tasks > 1:
        tags += CL_TAGS[1:]  # BWT, FWT, forgetting: none for one task
    edges = facts.filled if facts.filled is not None else distance_buckets(facts.max_distance)
    tags += [distance_tag(int(e)) for e in edges]
    tags += [delay_tag(k) for k in facts.delays]
    return tags + [tag for tag in TRAIN_TAGS if tag != "perf/act_ms" or facts.steps] + list(facts.memory)


def default_metric(corners: list[EnvFacts]) -> str:
    """ContinualShift: cl/ACC; NeedleRecall: eval/accuracy (its evaluations are recall episodes on fresh
    facts); LongDependency: the accuracy of the farthest distance bucket that every corner of the sweep fills
    (`far_edge`; the last bucket of `max_distance` where it is not known)."""
    family = corners[0].env_id.split("-")[0]
    if family in FAR_DISTANCE_ENVS:
        return distance_tag(min(f.far_edge or int(distance_buckets(f.max_distance)[-1]) for f in corners))
    if family in DELAY_ENVS:
        return "eval/accuracy"
    return "cl/ACC"


def check_metric(metric: str, corners: list[EnvFacts]) -> str:
    """`metric` if a corner of the sweep reports it, else one ConfigError line listing those they report."""
    if any(_reports(metric, f) for f in corners):
        return metric
    tags = list(dict.fromkeys(tag for f in corners for tag in reported_metrics(f)))  # union, in order, with the
    tags.sort(key=lambda tag: tag.startswith(TRAINING_PREFIXES))  # evaluation's first (a stable sort)
    who = "no trial's agent has the memory part that measures it" if metric in MEMORY_TAGS else \
        "no trial acts step by step (train.acting=step, or auto with model.dropout > 0 under supervised training)" \
        if metric == "perf/act_ms" else f"{corners[0].env_id} does not report it"  # (MemNet: slots, store)
    raise ConfigError(f"sweep.metric={metric!r}: {who}; choose one of: {', '.join(tags)}")


def _reports(metric: str, facts: EnvFacts) -> bool:
    return metric in reported_metrics(facts)


def env_facts(cfg) -> tuple[EnvFacts, int]:
    """The env's task count and largest distance (for metric names) and the episodes of one trial."""
    from agents.cl_metrics import env_schedule, run_distance_buckets
    from agents.episodes import make_vector_env, resolve_acting

    venv = make_vector_env(cfg.env.id, 1, dict(cfg.env.kwargs))
    try:
        schedule = env_schedule(venv)  # (starts, tasks, episodes)
        episodes = cfg.train.episodes
        if episodes is None and schedule is not None:
            episodes = schedule[2]
        if episodes is None:
            raise ConfigError(f"train.episodes is not set for {cfg.env.id}; set train.episodes=<n>")
        edges = run_distance_buckets(venv, episodes, cfg.train.eval_repeats)  # the trainer's buckets
        far = filled = None
        if cfg.env.id.split("-")[0] in FAR_DISTANCE_ENVS:
            far, filled = filled_edges(cfg.env.id, dict(cfg.env.kwargs), edges,
                                       int(venv.eval_episodes) * int(cfg.train.eval_repeats), int(venv.episode_length))
        delays = eval_delays(venv) if cfg.env.id.split("-")[0] in DELAY_ENVS else ()
        steps = resolve_acting(cfg.train.acting, venv, cfg.model.dropout, cfg.train.mode == "reinforce") == "step"
        facts = EnvFacts(cfg.env.id, int(venv.num_tasks), int(edges[-1]), far, delays, filled,
                         memory_tags(cfg.agent.name, int(cfg.memory.slots), bool(cfg.memory.store)), steps)
    finally:
        venv.close()
    return facts, int(episodes)


def eval_delays(venv) -> tuple[int, ...]:
    """The delays of the scored steps of one evaluation (`eval_episodes` eval resets in a row, as the trainer
    evaluates): NeedleRecall recalls every fact exactly `delay` episodes on, so recall/accuracy_delay<k> of any other
    k was allowed as the metric, and the sweep ran to its end to say that no trial reported it."""
    import numpy as np

    delays: set[int] = set()
    for e in range(int(venv.eval_episodes)):
        _, info = venv.reset(seed=0 if e == 0 else None, options={"phase": "eval", "task_id": 0})
        for got in (info, venv.upcoming(int(venv.episode_length))[1]):  # the first step's, then the episode's
            scored = np.asarray(got["scored"], bool)
            delays.update(int(d) for d in np.asarray(got["delay"])[scored])
    return tuple(sorted(delays))


def filled_edges(env_id: str, kwargs: dict, edges, episodes: int, length: int, steps: int = 2**21
                 ) -> tuple[int, tuple[int, ...]]:
    """The farthest of `edges` whose distance bucket holds at least FAR_SHARE of the scored steps of an evaluation
    (`episodes` eval episodes of `length` steps in a row, as the trainer evaluates; up to 256 lanes, ~`steps`
    steps), and every edge whose bucket holds any. The bound that sets the last edge can lie far out in a thin
    tail: LongDependency's cross-episode queries reach up to (gap + 1) x episode_length, but by default only 0.7%
    of the scored steps fall beyond 2048. A bucket between its distances holds none (distances [1, 4, 16]: d2 and
    d8), and a sweep on it ran to its end to say no trial reported it."""
    import numpy as np

    from agents.cl_metrics import AccuracyByKey
    from agents.episodes import make_vector_env

    buckets = AccuracyByKey(edges)  # the trainer's own bucketing
    venv = make_vector_env(env_id, max(1, min(256, steps // (episodes * (length + 1)))), kwargs)
    try:
        for e in range(episodes):
            _, info = venv.reset(seed=0 if e == 0 else None, options={"phase": "eval", "task_id": 0})
            for got in (info, venv.upcoming(length)[1]):  # the first step's, then the rest of the episode's
                scored = np.asarray(got["scored"], bool)
                buckets.update(np.asarray(got["distance"])[scored], np.zeros(int(scored.sum()), bool))
    finally:
        venv.close()
    totals = np.array([total for _, total in buckets.counts().values()])  # (K,)
    far = np.flatnonzero(totals >= FAR_SHARE * max(totals.sum(), 1))
    filled = tuple(int(e) for e, total in zip(edges, totals, strict=True) if total > 0)
    return (int(edges[far[-1]]) if far.size else int(edges[-1])), filled or tuple(int(e) for e in edges)


ENV_RANGE_VALUES = 16  # a PER_VALUE_OPTIONS integer range of up to this many values is measured at each value
# env options each of whose values names its own metrics: NeedleRecall's recall/accuracy_delay<k>, ContinualShift's
# eval/task_<j>/accuracy (measured at the ends only, num_tasks=2 of [1, 5] was left out of a missing-metric note)
PER_VALUE_OPTIONS = ("env.kwargs.delay", "env.kwargs.num_tasks")


def sweep_corners(search_space: dict[str, dict[str, list]]) -> list[dict]:
    """The combinations of the swept values that can change a trial's metric names or length (`RUN_KEYS`,
    `MEMORY_PART_KEYS`, env options): every value of a grid or choice, both ends of a range (tags and lengths grow
    with those keys or, like LongDependency's distances, are a list of values: the ends bound them), but every value
    of a PER_VALUE_OPTIONS integer range of up to ENV_RANGE_VALUES (delay=randint:[1,4]'s trials report
    recall/accuracy_delay2, which the ends did not; the other options' ranges at their ends: every value of each
    multiplied the corners, 256 for two of 16 values); of a memory part's values one that has it and one that
    does not. [{}] when none is swept."""
    values = {}
    for key, spec in search_space.items():
        if key in RUN_KEYS + MEMORY_PART_KEYS + ACTING_KEYS or key.startswith("env.kwargs."):
            (kind, args), = spec.items()
            if kind in ("grid", "choice"):
                values[key] = list(args)
            elif "randint" in kind and key in PER_VALUE_OPTIONS and args[1] - args[0] <= ENV_RANGE_VALUES:
                values[key] = list(range(args[0], args[1]))  # every value: NeedleRecall's delay tags are per value
            else:
                values[key] = [args[0], args[1] - 1 if "randint" in kind else args[1]]  # randint's high: exclusive
            if key in PRESENCE_KEYS:  # a part is there or not (slots > 0, store true, dropout): one value of each
                values[key] = list({bool(v): v for v in reversed(values[key])}.values())[::-1]
    return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]


def sweep_facts(search_space: dict, base) -> tuple[list[dict], list[EnvFacts], int]:
    """The `sweep_corners` combinations, the facts of each (set on the base config), and the most episodes a
    trial of the sweep trains (ASHA's max_t: a trial stops there)."""
    from agents.tune_space import trial_config

    corners, measured, facts, episodes = sweep_corners(search_space), {}, [], []
    for corner in corners:
        cfg = trial_config(base, corner)
        env_part = repr({k: v for k, v in corner.items() if k not in MEMORY_PART_KEYS})
        if env_part not in measured:  # the memory parts change only the memory tags: each env is measured once
            measured[env_part] = env_facts(cfg)
        env, length = measured[env_part]
        facts.append(replace(env, memory=memory_tags(cfg.agent.name, int(cfg.memory.slots), bool(cfg.memory.store))))
        episodes.append(length)
    if min(episodes) < 1:  # such a trial reports no result: Ray's metric check failed with a traceback
        swept = "train.episodes" in corners[episodes.index(min(episodes))]
        given = "sweep.search_space.train.episodes reaches 0" if swept else f"train.episodes={min(episodes)}"
        raise ConfigError(f"{given}: a trial that trains no episode reports no result; every trial of a sweep "
                          "needs train.episodes >= 1")
    return corners, list(facts), max(episodes)


def missing_in(metric: str, corners: list[dict], facts: list[EnvFacts]) -> list[dict]:
    """The corners whose trials do not report `metric` (they report NaN for it and cannot be the best), by the swept
    values that differ between corners (a memory part every trial has, `memory.slots=4` for slots 4 and 8, tells the
    trials apart no more than an unswept key)."""
    varied = {key for key in corners[0] if len({repr(corner[key]) for corner in corners}) > 1}
    return [{k: v for k, v in corner.items() if k in varied}
            for corner, f in zip(corners, facts, strict=True) if not _reports(metric, f)]
