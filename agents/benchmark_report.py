"""The end of a benchmark: per-run numbers, mean and 90% bootstrap interval over seeds, target checks and
results.json (results.md: `agents.benchmark_markdown`).

A run record (built by `agents.benchmark`) holds env, variant, agent, seed, status (`ok`, `failed`, `probe failed`),
its metrics.json (`metrics`), the probe evaluations of its checkpoint (`probes`: agents.evaluate results with the
env options they changed), the controller window, the env options, the env's chance level and the wall time.
Flat metric names (`flat_metrics`): the scalars of metrics.json (accuracy, ACC, BWT, ...), `acc_d<b>` per distance
bucket, `acc_within_window` / `acc_beyond_window` (mean of the buckets <= W / > W), `recall_delay<d>` and
`recall_facts<n>` (NeedleRecall: recall at delay d, and with n = delay x facts_per_episode facts held); every other
probe (LongDependency's, or NeedleRecall's of another option) as `probe <option>=<value>: accuracy` and
`probe <option>=<value>: acc_d<b>`.
"""

from __future__ import annotations

import math
import re

from agents.cl_metrics import bootstrap_ci
from agents.cli_args import counted
from agents.env_presets import preset_bases
from agents.preflight import env_source

# (agents.report and memory.metrics load torch and matplotlib: they are imported where used, so that
# `agents.benchmark` plans its runs, and refuses a bad command line, before those load)

OK, FAILED, PROBE_FAILED = "ok", "failed", "probe failed"  # a run's status
MET, MISSED, NOT_RUN, NOT_MEASURED = "met", "MISSED", "not run", "not measured"  # not measured: ran, no such number
SCALARS = ("accuracy", "ACC", "BWT", "FWT", "forgetting", "tokens_per_s", "params", "memory_bytes")
MIN_SEEDS = 3  # the targets are stated for >= 3 seeds
DEFAULT_CHANCE_MARGIN = 0.05  # "at chance": mean accuracy <= chance + this (a finite eval samples few queries)
PROBE = "probe "  # the flat names of the probes' numbers that are on no curve: see probe_name
CURVE_OPTIONS = {"delay", "facts_per_episode"}  # NeedleRecall: a probe of these is a point of a recall curve


def _family(env_id: str) -> str:
    return env_id.split("-")[0]


def _number(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ---------------------------------------------------------------- facts the report needs
def chance_level(env_id: str, kwargs: dict) -> float | None:
    """1 / number of possible answers, what a uniform guess among them scores: LongDependency's n values;
    NeedleRecall's content tokens (answers are drawn uniformly from them); ContinualShift's value tokens (every
    target is one of them); None for an env without such a level."""
    source = env_source(env_id, kwargs)
    if env_id.startswith("LongDependency"):
        return 1.0 / source.n
    if env_id.startswith("NeedleRecall"):
        return 1.0 / (source.vocab_size - len(source.special_tokens))
    if env_id.startswith("ContinualShift"):
        return 1.0 / source.num_values
    return None


# ---------------------------------------------------------------- numbers
def flat_metrics(record: dict) -> dict[str, float]:
    """One run's numbers by flat name (see the module docstring); absent / not applicable ones are left out."""
    m = record.get("metrics") or {}
    out = {k: _number(m.get(k)) for k in SCALARS} | {k: _number(record.get(k)) for k in ("wall_s", "cpu_s")}
    by_distance = {int(k): _number(v) for k, v in (m.get("accuracy_by_distance") or {}).items()}
    out |= {f"acc_d{b}": v for b, v in sorted(by_distance.items())}
    window = record.get("window")
    if window and by_distance:
        for name, keep in (("acc_within_window", lambda b: b <= window), ("acc_beyond_window", lambda b: b > window)):
            xs = [v for b, v in by_distance.items() if keep(b) and v is not None]
            out[name] = sum(xs) / len(xs) if xs else None
    kwargs = record.get("env_kwargs") or {}
    delay, per_episode = kwargs.get("delay"), kwargs.get("facts_per_episode")
    evaluations = [(kwargs, m)] + [({**kwargs, **p.get("env_kwargs", {})}, p) for p in record.get("probes") or []]
    for env_kwargs, result in evaluations:  # the run's own evaluation first: a probe never replaces it
        for d, v in (result.get("recall_by_delay") or {}).items():
            out.setdefault(f"recall_delay{int(d)}", _number(v))
        if delay and per_episode and env_kwargs.get("delay") == delay:  # capacity: facts held at the run's delay
            out.setdefault(f"recall_facts{delay * env_kwargs['facts_per_episode']}", _number(result.get("accuracy")))
    for probe in record.get("probes") or []:  # the rest of the probes: results.json held LongDependency's alone
        changed = probe.get("env_kwargs") or {}
        if _family(record["env"]) == "NeedleRecall" and set(changed) <= CURVE_OPTIONS:  # a point of a curve above
            continue
        name = probe_name(changed)
        out[f"{name}accuracy"] = _number(probe.get("accuracy"))
        out |= {f"{name}acc_d{int(b)}": _number(v) for b, v in (probe.get("accuracy_by_distance") or {}).items()}
    return {k: v for k, v in out.items() if v is not None}


def probe_name(changed: dict) -> str:
    """The flat-name prefix of a probe's numbers: `probe <option>=<value> ...: ` (values as an override spells
    them, so a list reads [1,2,4] as in the suite's command)."""
    from agents.tune_overrides import override_value

    return PROBE + " ".join(f"{k}={override_value(v)}" for k, v in changed.items()) + ": "


def aggregate(records: list[dict]) -> dict:
    """{env: {variant: {agent, seeds, failed, probe_failed, window, chance, metrics: {name: {mean, low, high, n,
    values}}}}}; `seeds` hold the seeds whose probe failed (`probe_failed`) too: their training numbers count.

    `values` are (seed, value) pairs; a seed whose run failed, or where a metric does not apply, is left out of
    that metric (bootstrap_ci takes only real numbers)."""
    out: dict = {}
    for r in records:
        cell = out.setdefault(r["env"], {}).setdefault(r["variant"], {
            "agent": r["agent"], "seeds": [], "failed": [], "probe_failed": [], "window": r.get("window"),
            "chance": r.get("chance"), "per_seed": {}})
        (cell["failed"] if r["status"] == FAILED else cell["seeds"]).append(r["seed"])
        if r["status"] == PROBE_FAILED:  # its training numbers count: one of `seeds`, and noted
            cell["probe_failed"].append(r["seed"])
        if r["status"] != FAILED:
            cell["per_seed"][r["seed"]] = flat_metrics(r)
    for variants in out.values():
        for cell in variants.values():
            per_seed = cell.pop("per_seed")
            names = sorted({k for flat in per_seed.values() for k in flat}, key=_name_order)
            cell["metrics"] = {}
            for name in names:
                pairs = [(s, flat[name]) for s, flat in sorted(per_seed.items()) if name in flat]
                mean, low, high = bootstrap_ci([v for _, v in pairs])
                cell["metrics"][name] = {"mean": mean, "low": low, "high": high, "n": len(pairs), "values": pairs}
    return out


def _name_order(name: str) -> list:
    """Numbers in names in numeric order: acc_d2 before acc_d16, and a probe's delay=5 before delay=20 (text and
    numbers alternate from the start, so any two keys compare)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def series(metrics: dict, prefix: str) -> list[tuple[int, dict]]:
    """[(key, stat)] of the metrics named <prefix><int>, by key: e.g. prefix `acc_d` -> distance buckets."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)")
    found = [(int(m.group(1)), stat) for name, stat in metrics.items() if (m := pattern.fullmatch(name))]
    return sorted(found, key=lambda kv: kv[0])


# ---------------------------------------------------------------- targets (GitHub issue #6)
def _target(env, variant, text, status, value, detail="") -> dict:
    return {"env": env, "variant": variant, "target": text, "status": status, "value": value, "detail": detail}


def _worst(metrics: dict, prefix: str, keep) -> tuple[int | None, dict | None]:
    """The series point with the lowest mean among the keys kept (the weakest distance bucket or delay)."""
    chosen = [(k, s) for k, s in series(metrics, prefix) if keep(k)]
    return min(chosen, key=lambda kv: kv[1]["mean"]) if chosen else (None, None)


def check_targets(agg: dict, chance_margin: float = DEFAULT_CHANCE_MARGIN) -> list[dict]:
    """Every target of the issue for the envs that ran, as met / MISSED (on the mean over seeds), not run, or not
    measured (the variant ran but its runs report no such number, e.g. the BWT of a one-task budget)."""
    targets = []
    for env, variants in agg.items():
        if env in preset_bases():  # the issue states them for the base envs' settings (see `presets_note`)
            continue

        def metrics(variant, variants=variants) -> dict:
            return (variants.get(variant) or {}).get("metrics", {})

        def check(variant, text, stat, ok, label, extra="", env=env, variants=variants) -> dict:
            cell = variants.get(variant)
            if stat is None:
                if cell and cell["seeds"]:  # it ran, but its budget gave no such number (BWT of one task)
                    return _target(env, variant, text, NOT_MEASURED, None, f"its runs report no {label}")
                # why it was not run (the detail repeated the status: "not run | not run")
                why = f"no {variant} variant in this benchmark" if not cell else "every run failed"
                return _target(env, variant, text, NOT_RUN, None, why)
            detail = f"{label}: {fmt(stat, 'frac')}{extra}"
            if stat["n"] < MIN_SEEDS:
                detail += f" ({counted(stat['n'], 'seed')}; the targets ask for >= {MIN_SEEDS})"
            return _target(env, variant, text, MET if ok(stat["mean"]) else MISSED, stat["mean"], detail)

        def at_chance(variant, text, metric, label, variants=variants) -> dict:
            chance = (variants.get(variant) or {}).get("chance")
            if chance is None:
                return check(variant, text, None, None, label)
            return check(variant, text, metrics(variant).get(metric), lambda v: v <= chance + chance_margin, label,
                         f" (chance {chance:.3f}; at chance means <= chance + {chance_margin})")

        def measured(prefix, what, form="{}") -> str:  # what MemNet's runs measured, when not what a target asks
            keys = [form.format(key) for key, _ in series(metrics("memnet"), prefix)]
            return f" (they measured {what} {', '.join(keys)} only)" if keys else ""

        family = _family(env)
        if family == "LongDependency":
            k, stat = _worst(metrics("memnet"), "acc_d", lambda b: b <= 1024)
            reach = max([b for b, _ in series(metrics("memnet"), "acc_d")] or [0])
            short = f"; buckets only up to {reach}" if stat is not None and reach < 1024 else ""
            label = (f"worst bucket d<={k}" if k is not None  # None: no bucket up to 1024 was measured
                     else f"accuracy in a bucket up to 1024{measured('acc_d', 'buckets', 'd<={}')}")
            targets.append(check("memnet", "MemNet accuracy >= 0.95 in every distance bucket up to 1024", stat,
                                 lambda v: v >= 0.95, label, short))
            window = (variants.get("transformer") or {}).get("window")
            targets.append(at_chance("transformer", "memory-free transformer at chance beyond its window"
                                     + (f" W={window}" if window is not None else ""), "acc_beyond_window",
                                     "accuracy beyond W"))
        elif family == "NeedleRecall":
            k, stat = _worst(metrics("memnet"), "recall_delay", lambda d: d >= 10)
            label = (f"recall at delay {k}" if k is not None  # None: no delay >= 10 was measured
                     else f"recall at a delay >= 10 episodes{measured('recall_delay', 'delays')}")
            targets.append(check("memnet", "MemNet recall of fresh facts >= 0.95 after a delay >= 10 episodes, "
                                 "writes off", stat, lambda v: v >= 0.95, label))
            targets += [at_chance(variant, f"{variant} at chance on fresh facts", "accuracy", "recall")
                        for variant in ("transformer", "lstm", "gru")]
        elif family == "ContinualShift":
            for variant, key, text, ok in (
                    ("transformer", "BWT", "memory-free transformer forgets: BWT <= -0.3", lambda v: v <= -0.3),
                    ("memnet", "ACC", "MemNet ACC >= 0.9", lambda v: v >= 0.9),
                    ("memnet", "BWT", "MemNet BWT >= -0.05", lambda v: v >= -0.05)):
                targets.append(check(variant, text, metrics(variant).get(key), ok, key))
    return targets


def presets_note(envs) -> str | None:
    """The line that says the presets that ran have no targets (they were judged by their base env's, by name)."""
    presets = [env for env in envs if env in preset_bases()]
    return (f"No targets for {', '.join(presets)}: the issue states them for the base envs' settings."
            if presets else None)


def capacity_notes(agg: dict, level: float = 0.95) -> list[str]:
    """Where each variant's recall (mean over seeds) first falls below `level` as the facts held grow."""
    notes = []
    for env, variants in agg.items():
        for variant, cell in variants.items():
            curve = series(cell["metrics"], "recall_facts")
            if len(curve) < 2:  # only the run's own evaluation: no curve to read a capacity from
                continue
            held = [k for k, s in curve if s["mean"] >= level]
            below = next(((k, s) for k, s in curve if s["mean"] < level), None)
            if below is None:
                text = f">= {level:.0%} up to {curve[-1][0]} facts held (the most tried)"
            elif below[0] == curve[0][0]:
                text = f"below {level:.0%} already at {below[0]} facts held, the fewest tried ({below[1]['mean']:.3f})"
            else:
                kept = max([k for k in held if k < below[0]] or [0])
                text = (f"falls below {level:.0%} at {below[0]} facts held ({below[1]['mean']:.3f})"
                        + (f"; >= {level:.0%} up to {kept}" if kept else ""))
            notes.append(f"{env} / {variant}: {text}")
    return notes


# ---------------------------------------------------------------- a cell of results.md (and a target's number)
def fmt(stat: dict | None, kind: str = "frac", seeds: int | None = None) -> str:
    """`mean [low, high]` (90% bootstrap interval over seeds; one seed: the value alone); with `seeds` (the row's
    successful seeds), a number that fewer of them report says on how many it rests (a bucket one seed filled)."""
    if stat is None:
        return "–"
    one, unit, scale = {"frac": "{:.3f}", "int": "{:,.0f}", "s": "{:.0f}"}.get(kind, "{:.1f}"), "", 1.0
    if kind == "bytes":  # one unit for the cell, chosen by the mean (KiB for a recurrent state, MiB for a store)
        from memory.metrics import byte_unit

        unit, size = byte_unit(stat["mean"])
        unit, scale = f" {unit}", 1 / size
    mean, low, high = (one.format(stat[k] * scale) for k in ("mean", "low", "high"))
    if kind == "frac":  # as the terminal's three_places: a rounding residue of 0 is 0.000 there, not -0.000
        mean, low, high = (x.replace("-0.000", "0.000") for x in (mean, low, high))
    text = mean + unit if stat["n"] == 1 or low == high else f"{mean} [{low}, {high}]{unit}"
    return text + (f" ({stat['n']} of {counted(seeds, 'seed')})" if seeds is not None and stat["n"] < seeds else "")


def write_results(bench_dir, records: list[dict], context: dict, chance_margin: float = DEFAULT_CHANCE_MARGIN):
    """results.json (every number, per seed too) and results.md; returns (aggregate, targets, markdown)."""
    from agents.benchmark_markdown import markdown  # (it imports this module)
    from agents.report import write_json_atomic, write_text_atomic

    agg = aggregate(records)
    targets = check_targets(agg, chance_margin)
    text = markdown(agg, targets, records, context)
    write_json_atomic(bench_dir / "results.json", {**context, "chance_margin": chance_margin, "targets": targets,
                                                   "capacity": capacity_notes(agg), "aggregate": agg,
                                                   "runs": records})
    write_text_atomic(bench_dir / "results.md", text)
    return agg, targets, text


if __name__ == "__main__":  # python -m agents.benchmark_report DIR: DIR's results.md, results.json and plots again
    from agents.benchmark_rebuild import main
    raise SystemExit(main())
