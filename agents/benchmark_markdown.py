"""results.md, the human-readable end of a benchmark: the header, the targets, the capacity notes, per env a table
of every variant and the series tables (accuracy by distance, recall by delay and by facts held), the probes on
none of those curves, the failed runs; and the numbers of the terminal's line per run, named as in results.md.
The numbers, the targets and results.json are `agents.benchmark_report`'s."""

from __future__ import annotations

import math

from agents.benchmark_report import OK, PROBE, _family, capacity_notes, flat_metrics, fmt, presets_note, series
from agents.cli_args import counted

MAIN_COLUMNS = [("accuracy", "eval accuracy", "frac"), ("acc_within_window", "acc d<=W", "frac"),
                ("acc_beyond_window", "acc d>W", "frac"), ("ACC", "ACC", "frac"), ("BWT", "BWT", "frac"),
                ("FWT", "FWT", "frac"), ("forgetting", "forgetting", "frac"), ("params", "params", "int"),
                ("memory_bytes", "memory", "bytes"), ("tokens_per_s", "train tokens/s", "int"),
                ("wall_s", "wall s", "s"), ("cpu_s", "CPU s", "s")]
SERIES_TABLES = [("acc_d", "Accuracy by distance (bucket upper bound d, steps)", "d<="),
                 ("recall_delay", "Recall of fresh facts by delay (episodes)", "delay "),
                 ("recall_facts", "Recall by facts held (capacity: delay x facts_per_episode)", "")]


def minutes(seconds: float | None) -> str:
    """A wall time as the terminal's ETA and last line and results.md's header write it (results.md said 14.3 min
    for the terminal's 14 min 18 s)."""
    return "?" if seconds is None else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def key_numbers(record: dict) -> str:
    """The numbers a progress line shows for one finished run, named and written as results.md's columns (it said
    accuracy and acc_beyond_window for results.md's eval accuracy and acc d>W, and recall by facts held to 2
    places where results.md has 3)."""
    from agents.report import three_places

    flat = flat_metrics(record)
    names = {"LongDependency": ("accuracy", "acc_beyond_window"), "ContinualShift": ("ACC", "BWT"),
             "NeedleRecall": ("accuracy",)}.get(_family(record["env"]), ("accuracy",))
    labels = {name: label for name, label, _ in MAIN_COLUMNS}
    shown = [f"{labels[n]} {three_places(flat[n])}" for n in names if n in flat]
    capacity = series({k: {"mean": v} for k, v in flat.items()}, "recall_facts")
    if len(capacity) > 1:
        shown.append("recall by facts held " + " ".join(f"{k}:{three_places(s['mean'])}" for k, s in capacity))
    return ", ".join(shown) or "no numbers"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A Markdown table; numbers right-aligned after the first `text_columns` columns."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _seeds(cell: dict) -> str:
    """`ok/all`, with the failed runs and the runs whose probe failed: the latter read as ok here (3/3) while the
    header counted them failed and "Failed runs" listed them."""
    total = len(cell["seeds"]) + len(cell["failed"])
    notes = [f"{len(cell['failed'])} FAILED"] * bool(cell["failed"]) + \
        [f"{len(cell['probe_failed'])} probe failed"] * bool(cell["probe_failed"])
    return f"{len(cell['seeds'])}/{total}" + (f" ({', '.join(notes)})" if notes else "")


def env_tables(env: str, variants: dict) -> list[str]:
    present = {name for cell in variants.values() for name in cell["metrics"]}
    # one task: ACC is the eval accuracy again; not with 1 of 5 tasks trained (ACC over that one, accuracy over 5)
    same = all(math.isclose(v, dict(cell["metrics"].get("accuracy", {}).get("values", [])).get(s, math.nan))
               for cell in variants.values() for s, v in cell["metrics"].get("ACC", {}).get("values", []))
    columns = [c for c in MAIN_COLUMNS if c[0] in present  # the window split means something for LongDependency
               and (c[0] not in ("acc_within_window", "acc_beyond_window") or _family(env) == "LongDependency")
               and (c[0] != "ACC" or "BWT" in present or not same)]
    rows = [[variant, cell["agent"], _seeds(cell)] + [
        fmt(cell["metrics"].get(k), kind, len(cell["seeds"])) if cell["seeds"] else "FAILED" for k, _, kind in columns]
        for variant, cell in variants.items()]
    lines = [f"## {env}", ""] + _table(["variant", "agent", "seeds ok", *[c[1] for c in columns]], rows, 2)
    for prefix, title, label in SERIES_TABLES:
        keys = sorted({k for cell in variants.values() for k, _ in series(cell["metrics"], prefix)})
        if not keys or (prefix == "acc_d" and len(keys) < 2):  # one bucket (every recall as far): no table
            continue
        rows = [[variant] + [fmt(cell["metrics"].get(f"{prefix}{k}"), seeds=len(cell["seeds"])) for k in keys]
                for variant, cell in variants.items() if any(f"{prefix}{k}" in cell["metrics"] for k in keys)]
        lines += ["", f"{title}:", ""] + _table(["variant", *[f"{label}{k}" for k in keys]], rows)
    return lines + probe_table(variants) + [""]


def probe_table(variants: dict) -> list[str]:
    """The probes on no curve above (LongDependency's: they were in results.json only), a row per variant and
    changed env options: the eval accuracy and the accuracy by distance, as the tables above show the run's own."""
    probes: dict = {}  # (variant, options) -> {metric: stat}
    for variant, cell in variants.items():
        for name, stat in cell["metrics"].items():
            if name.startswith(PROBE):
                options, _, metric = name.removeprefix(PROBE).rpartition(": ")
                probes.setdefault((variant, options), {})[metric] = stat
    if not probes:
        return []
    buckets = sorted({k for metrics in probes.values() for k, _ in series(metrics, "acc_d")})
    rows = [[variant, f"`{options}`", *[fmt(metrics.get(name), seeds=len(variants[variant]["seeds"]))
                                       for name in ["accuracy", *[f"acc_d{b}" for b in buckets]]]]
            for (variant, options), metrics in probes.items()]
    return ["", "Probes (final checkpoints evaluated again with changed env options; accuracy by distance):", ""] + \
        _table(["variant", "env options", "eval accuracy", *[f"d<={b}" for b in buckets]], rows, 2)


def markdown(agg: dict, targets: list[dict], records: list[dict], context: dict) -> str:
    failed = [r for r in records if r["status"] != OK]
    cpu = sum(r.get("cpu_s") or 0.0 for r in records)
    # a run is not split between workers: the longest bounds it (1 run of 60 s at workers=16 read 0.1 min)
    idle_wall = max(cpu / context["workers"], max((r.get("cpu_s") or 0.0 for r in records), default=0.0))
    lines = [f"# memstream benchmark: suite `{context['suite']}`", "",
             f"- command: `{context['command']}`",
             f"- machine: {context['machine']}",
             f"- started {context['started']}, wall time {minutes(context['wall_s'])}, "
             f"{counted(context['workers'], 'run')} at a time" + (" (INTERRUPTED: partial results)" if context.get(
                 "interrupted") else ""),
             f"- runs: {len(records)} ({len(records) - len(failed)} ok, {len(failed)} failed); CPU time "
             f"{cpu / 60:.1f} min, i.e. about {minutes(idle_wall)} of wall time at "
             f"{counted(context['workers'], 'run')} at a time on an otherwise idle machine", "",
             "Cells: mean over seeds [90% bootstrap interval]; `(1 of 3 seeds)`: a number only some of the row's runs "
             "report (a distance bucket that one run's evaluation filled). Accuracies are fractions of scored steps on "
             "the final evaluation; NeedleRecall evaluates fresh facts (never trained on) with memory writes off.", "",
             "## Targets", ""]
    rows = [[t["env"], t["variant"], t["target"], t["status"], t["detail"]] for t in targets]
    # only presets ran: no table (its header alone read as a table whose rows were lost), the note says why
    # "number": it holds the reason where there is none (every run failed, its runs report no such number)
    lines += _table(["env", "variant", "target", "status", "number, or why none"], rows, 5) + [""] if rows else []
    lines += [presets_note(agg), ""] if presets_note(agg) else []
    notes = capacity_notes(agg)
    if notes:
        lines += ["Capacity (NeedleRecall, recall >= 95% as the facts held grow):", ""] + [f"- {n}" for n in notes]
        lines.append("")
    for env, variants in agg.items():
        lines += env_tables(env, variants)
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            log = (r.get("error") or "").rstrip() or "(the log is empty)"  # a run stopped before its first line
            lines += [f"- {r['env']} / {r['variant']} / seed {r['seed']}: {r['status']} ({r.get('error_kind', '')}), "
                      f"`{r['run_dir']}`", "", "```", log, "```", ""]
    return "\n".join(lines) + "\n"
