"""MemNet vs the baselines on every env: `python -m agents.benchmark [key=value ...]` -> tables, targets, plots.

usage: python -m agents.benchmark [suite=quick|full|FILE.yaml] [seeds=N] [workers=N] [envs=a,b] [agents=v1,v2]
                                  [out=DIR] [run-config key=value ...]
  suite     agents/conf/benchmark/<name>.yaml (quick: <= 20 min on 2 cores; full: a bigger machine) or a path;
            it holds the budgets: run overrides for every run, per env and per variant, and the probes
  seeds     runs per (env, variant): seeds 0..N-1 (default: the suite's)
  workers   runs at once (default: the CPU cores it may run on: its affinity mask)
  envs      comma list of env ids to run (default: all of the suite's)
  agents    comma list of variant names to run (default: all of the suite's)
  out       output folder, new or empty (default: runs/benchmark/<YYYY-mm-dd_HH-MM-SS>)
  any dotted run-config key (train.episodes=2, memory.slots=32, ...) or device=: set in every run, last

Each (env, variant, seed) is a normal `python -m agents.run` in its own process (`train.threads=1`,
OMP_NUM_THREADS=1) writing `<out>/<env>/<variant>/s<seed>/` (so `tensorboard --logdir <out>` shows every run).
Variants named in an env's `probes:` are then re-evaluated from their checkpoint with changed env options
(`python -m agents.evaluate ... env.kwargs.<key>=v1,v2,...`), e.g. NeedleRecall's capacity curve. At the end:
results.md (tables, targets met / MISSED), results.json (every number, per seed too) and plots/*.png.
"""

from __future__ import annotations

from agents.startup import end_startup, finish, guard_startup

if __name__ == "__main__":  # Ctrl+C or SIGTERM while its imports load (seconds): one line
    guard_startup("nothing was written")

import os  # noqa: E402  (after the guard above)
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import OmegaConf

from agents import benchmark_report as report
from agents.benchmark_markdown import minutes
from agents.benchmark_runner import Job, execute
from agents.benchmark_suite import RUN_ONLY, SuiteSpec, bounded, comma_list, load_suite, suite_overrides
from agents.checkpoint_paths import shell_arg
from agents.cli_args import check_given_once, counted, override_key, shortened, unquoted, unusable_path
from agents.config import ConfigError, group_options, load_config, positive_int_setting, utf8
from agents.config_messages import error_line
from agents.interrupts import interrupts_held, sigterm_as_interrupt
from agents.new_folders import claim_new_folder, remove_made_folders, stamped_names, time_stamp
from agents.preflight import env_source, model_fits
from agents.threads import usable_cores
from agents.tune_overrides import merge_overrides

KEYS = ("suite", "seeds", "workers", "envs", "agents", "out")
COST_RANK = {"memnet": 0, "transformer": 1, "lstm": 2, "gru": 2}  # slowest first (measured tokens/s)


def machine() -> str:
    """The machine line of results.md: CPU count and model, torch, python, OS."""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):  # not Linux
        cpu = platform.processor() or platform.machine()
    try:
        torch_version = version("torch")  # the installed build's version, as the runs' children import it
    except PackageNotFoundError:
        torch_version = "?"
    return (f"{os.cpu_count()} CPUs ({cpu}), torch {torch_version}, python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def usage() -> str:
    return f"{__doc__.strip()}\n\nsuites: {', '.join(group_options('benchmark'))}"


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """The benchmark's own keys (dict) and the run-config overrides for every run."""
    given: dict = {}
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:  # `=x`: was "unknown key ''"
            raise ConfigError(f"argument {arg!r} is not key=value; run python -m agents.benchmark --help")
        if key in KEYS:
            if key in given:  # the first one used to be dropped silently (run-config keys: the last one wins)
                raise ConfigError(f"{key}= is given twice ({given[key]!r}, {value!r}); give it once")
            # quoted as Hydra's grammar reads a value (seeds='2', agents='memnet,gru' were refused), and paths with ~
            # as agents.run's path keys (`out='~/b'` made a folder named ~)
            given[key] = os.path.expanduser(unquoted(value)) if key in ("out", "suite") else unquoted(value)
        elif key in RUN_ONLY:
            raise ConfigError(f"{key}= is set per run by the benchmark; {RUN_ONLY[key]}")
        elif key == "resume":  # check_out refuses a used out=: a benchmark always starts every run afresh
            raise ConfigError("resume=: a benchmark cannot be resumed; start it again with a new out=")
        elif "." in key or key == "device":
            overrides.append(arg)
        else:
            raise ConfigError(f"unknown key {key!r}; benchmark keys: {', '.join(KEYS)} (dotted run-config keys "
                              "such as train.episodes=4 go to every run)")
    # a run-config key twice: the last one won silently, and the whole suite ran with it
    check_given_once([override_key(o) for o in overrides], overrides)
    if given.get("out") == "":  # Path("") is the working folder
        raise ConfigError("out= is empty; name a new folder")
    opts = {"suite": "quick"} | given
    for key in ("seeds", "workers"):
        if key in opts:
            opts[key] = bounded(key, positive_int_setting(key, opts[key]))
    for key in ("envs", "agents"):
        if key in opts:
            opts[key] = comma_list(key, opts[key])
    return opts, overrides


def _select(key: str, wanted: list[str] | None, available: dict) -> list[str]:
    if wanted is None:
        return list(available)
    unknown = [w for w in wanted if w not in available]
    if unknown or not wanted:
        raise ConfigError(f"{key}={','.join(wanted)}: {unknown[0] if unknown else 'empty'} is not in the suite; "
                          f"choose from: {', '.join(available)}")
    return [a for a in available if a in wanted]


def plan(opts: dict, suite: SuiteSpec, cli_overrides: list[str], out: Path) -> list[Job]:
    """Every run, its config composed and validated now, and its model made (a bad key, or a size that does not fit,
    fails before any run starts)."""
    seeds = opts.get("seeds", suite.seeds)
    chosen_envs = _select("envs", opts.get("envs"), suite.envs)
    chosen = _select("agents", opts.get("agents"), suite.variants)
    cli = suite_overrides("command line", cli_overrides)
    jobs, models = [], []  # models: (label, config, vocabulary) of each (env, variant)
    for env in chosen_envs:
        spec = suite.envs[env]
        for variant in chosen:
            v = suite.variants[variant]
            # no progress bars in the runs' logs, unless the command line asks for them (its values win)
            overrides = merge_overrides([f"env={env}", f"agent={v.agent}", "train.threads=1"], suite.overrides,
                                        spec.overrides, v.overrides, ["train.progress=false"], cli)
            cfg = load_config([*overrides, "seed=0"])
            kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)  # plain lists: JSON and the env
            source = env_source(env, kwargs)
            models.append((f"{env} / {variant}: its model", cfg, int(source.vocab_size)))
            facts = {"window": int(cfg.model.window), "env_kwargs": kwargs, "chance": report.chance_level(env, kwargs)}
            probes = {}
            if variant in spec.probes.variants:
                for key, values in spec.probes.vary.items():
                    values = [x for x in values if x != kwargs.get(key)]  # the run's own evaluation has that one
                    for x in values:
                        try:
                            probed = env_source(env, kwargs | {key: x})
                        except ConfigError as exc:
                            raise ConfigError(f"envs.{env}.probes.vary.{key}={x!r}: {exc}") from None
                        if restored_on(probed) != restored_on(source):  # every run trained, then its probe failed
                            raise ConfigError(f"envs.{env}.probes.vary.{key}={x!r}: agents.evaluate cannot restore a "
                                              "run's weights and accuracy matrix on an env with another vocab_size "
                                              "or task schedule; probe other options (keep vocab_size, num_tasks, "
                                              "revisit)")
                    if values:
                        probes[key] = values
            jobs += [Job(env, variant, v.agent, seed, out / env / variant / f"s{seed}", overrides, probes, facts)
                     for seed in range(seeds)]
    # device=cuda without CUDA, or sizes past this machine's memory: every run would start and fail on it, each
    # saying so only in its log. After every config is checked (a bad one is answered before torch loads); each
    # (env, variant)'s model once (every seed's is the same), on the CPU
    for label, cfg, vocab_size in models:
        model_fits(cfg, vocab_size, label, "lower them (in the suite or on the command line)")
    # seed by seed (a complete table early), slowest kinds first within a seed (a short tail at the end)
    return sorted(jobs, key=lambda j: (j.seed, COST_RANK.get(j.agent, 0), not j.probes))


def restored_on(source) -> tuple[int, int, int]:
    """What a probe's env must keep for `agents.evaluate` to restore the run on it (`evaluate.check_sweep`): the
    vocabulary (the weights) and the accuracy matrix's shape, (training blocks, tasks)."""
    return int(source.vocab_size), len(getattr(source, "block_tasks", (0,))), int(source.num_tasks)


def default_out() -> tuple[Path, list[Path]]:
    """runs/benchmark/<stamp>, claimed by making it (two benchmarks started in the same second shared one, and one's
    runs failed on the other's), and the folders made (removed again if the benchmark is refused before it runs)."""
    try:
        return claim_new_folder(stamped_names(Path("runs") / "benchmark", time_stamp()))
    except OSError as exc:  # a file named runs, no permission
        raise ConfigError(f"cannot create the benchmark folder under {str(Path('runs').resolve())!r} "
                          f"({exc.strerror or exc}); choose one with out=") from None


def check_out(out: Path) -> None:
    """out= must be a new or empty folder; checked before planning so a used one fails at once."""
    if not utf8(str(out)):  # every run failed on it (TensorBoard), then results.md a UnicodeEncodeError traceback
        raise ConfigError(f"out={str(out)!r}: not UTF-8 text (bytes the locale does not decode); the runs' TensorBoard "
                          "writers and the report take UTF-8 names only: choose one")
    if why := unusable_path(str(out.absolute())):
        raise ConfigError(f"out={shortened(str(out))!r}: {why}; choose another folder")
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out={str(out)!r} is a file, not a folder; choose a new folder")
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"out={str(out)!r} is not empty{killed_benchmark(out)}; choose a new folder")
    except OSError as exc:  # e.g. a parent folder we may not read
        raise ConfigError(f"out={str(out)!r}: cannot read it ({exc.strerror or exc}); choose another folder") \
            from None


def killed_benchmark(out: Path) -> str:
    """What a used out= holds when it is a benchmark killed before it wrote its results (SIGKILL: no results.json
    beside its runs' folders), for the refusal's line: its runs by how far they got; "" for anything else. A re-run
    there said only "is not empty", with no word of the runs it could still use."""
    runs = sorted(p.parent for p in out.glob("*/*/s*/run.log"))
    if (out / "results.json").exists() or not runs:
        return ""
    finished = [r for r in runs if (r / "metrics.json").is_file()]
    part = [r for r in runs if r not in finished and (r / "checkpoints" / "last.pt").is_file()]
    early = len(runs) - len(finished) - len(part)
    note = (f": it holds a benchmark stopped before it wrote its results (killed?): {len(finished)} of its "
            f"{len(runs)} started runs finished, {len(part)} stopped part way")
    if part:
        note += f" (python -m agents.run resume=<run> continues one, e.g. {shell_arg('resume', part[0])})"
    if early:
        note += f", {early} before their first checkpoint"
    return note + "; a benchmark cannot be resumed"


def make_out(out: Path) -> None:
    """Create out= once every run is planned (a bad config leaves no folder behind)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way, no such parent, no permission
        raise ConfigError(f"out={str(out)!r}: cannot create the folder ({exc.strerror or exc}); choose a "
                          "folder you can write") from None


def _after_failed_write(exc: OSError, out: Path) -> str:
    """The fix for results that failed to be written. Once results.json is (the first), `agents.benchmark_report`
    writes the rest from it: "rerun" was the whole benchmark again (20 min for the quick suite)."""
    from memory.disk import NO_RIGHTS

    fix = "make it writable" if exc.errno in NO_RIGHTS else "free space"
    failed = os.path.basename(os.fsdecode(exc.filename)) if exc.filename is not None else None
    if failed not in (None, "results.json") and (out / "results.json").is_file():
        return f"{fix}, then write them again with: python -m agents.benchmark_report {shlex.quote(str(out))}"
    return f"{fix} and rerun"


def main(argv: list[str] | None = None) -> int:
    """SIGTERM (a scheduler's stop, `kill`) ends the benchmark as Ctrl+C does: the runs in flight are stopped and the
    results so far written (a plain SIGTERM ended it silently, its runs left running)."""
    end_startup()  # Ctrl+C is KeyboardInterrupt again, caught below
    with sigterm_as_interrupt():
        return _main(sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
    claimed: list[Path] = []  # the default out= folder, made at once: gone again if the benchmark does not start
    try:
        opts, cli_overrides = parse_args(argv)
        suite = load_suite(opts["suite"])
        out, claimed = (Path(opts["out"]), []) if "out" in opts else default_out()
        check_out(out)  # before resolve(): a symlink loop in it was a RuntimeError traceback there (Python < 3.13)
        out = out.resolve()
        jobs = plan(opts, suite, cli_overrides, out)
        make_out(out)
        with interrupts_held():  # matplotlib: a second of imports (a Ctrl+C inside them waits for their end)
            from agents.benchmark_plots import write_plots
    except ConfigError as exc:
        remove_made_folders(claimed)
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM while the runs are planned
        remove_made_folders(claimed)
        print("\ninterrupted before any run started; nothing was run", file=sys.stderr)
        return 130
    workers = opts.get("workers", usable_cores())
    envs_run = [e for e in suite.envs if any(j.env == e for j in jobs)]  # in the suite's order
    variants_run = [v for v in suite.variants if any(j.variant == v for j in jobs)]
    # counted as results.md and the last line count ("1 env(s) x ... 1 seed(s)" there, "1 run" here)
    print(f"memstream benchmark {opts['suite']!r}: {counted(len(envs_run), 'env')} x "
          f"{counted(len(variants_run), 'variant')} x {counted(opts.get('seeds', suite.seeds), 'seed')} = "
          f"{counted(len(jobs), 'run')}, {workers} at a time -> {out}", flush=True)
    records, interrupted = execute(jobs, workers, suite.timeout_s)
    written = False
    try:  # a full disk at the end: one line (the runs' folders, each with its metrics.json, stay)
        # Ctrl+C or SIGTERM while they are written (the machine's description too, ~2 ms) acts once they are (a
        # second one at once): it was a KeyboardInterrupt traceback, with results.md or the plots not written
        with interrupts_held():
            context = {"suite": opts["suite"], "description": suite.description,
                       "command": shlex.join(["python", "-m", "agents.benchmark", *argv]), "machine": machine(),
                       "started": started, "wall_s": time.monotonic() - t0, "workers": workers,
                       "interrupted": interrupted, "envs": envs_run, "variants": variants_run,
                       "overrides": {f"{j.env}/{j.variant}": j.overrides for j in jobs}}
            records.sort(key=lambda r: (envs_run.index(r["env"]), variants_run.index(r["variant"]), r["seed"]))
            agg, targets, _ = report.write_results(out, records, context, suite.targets.chance_margin)
            plots = write_plots(out / "plots", agg, records)
            written = True
    except OSError as exc:
        print(error_line(f"cannot write the results in {out} ({exc.strerror or exc}); {_after_failed_write(exc, out)}"),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; the results are written: {out / 'results.md'}, results.json, the plots" if written
              else f"\ninterrupted while the results were written (a second signal): {out} may lack some of them",
              file=sys.stderr)
        return 130
    print("\ntargets:" if targets else "\ntargets: none")  # only presets ran: the note below says why
    width = max((len(t["status"]) for t in targets), default=0)  # "not measured" overran a 7-wide column
    for t in targets:
        print(f"  {t['status']:<{width}} {t['env']} / {t['variant']}: {t['target']}  [{t['detail']}]")
    if note := report.presets_note(agg):
        print(f"  {note}")
    failed = [r for r in records if r["status"] != report.OK]
    print(f"\n{counted(len(records), 'run')} ({len(failed)} failed{', interrupted' if interrupted else ''}) in "
          f"{minutes(time.monotonic() - t0)}: {out / 'results.md'}, results.json, {counted(len(plots), 'plot')}")
    print(f"  curves: tensorboard --logdir {shlex.quote(str(out))}")
    return 130 if interrupted else (1 if failed or len(records) < len(jobs) else 0)


if __name__ == "__main__":
    finish(main())
