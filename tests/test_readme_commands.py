"""The commands of the README's shell blocks are accepted as written: each `python -m agents.run`, `agents.tune` and
`agents.benchmark` line passes its command's own checks (those it makes before it trains: config, env options, sweep
file and search space, suite and every run's config), and each `python benchmarks/<script>.py` line names only
options its script has. A renamed key or option left in the README failed only for the reader who copied it.
Lines that point at a run of the reader's own (`resume=`, `config=`) are left out; an `agents.evaluate` line is
checked against a one-episode run of the env its `checkpoint=` names, and `suite=<file>.yaml` with the suite file
the README shows. tests/test_readme.py
runs the Python blocks."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from agents.config import ConfigError
from tests.repo_env import REPO, repo_env

SHELL_BLOCKS = ("bash", "")  # ```bash and plain ``` blocks (the plain ones also hold printed output: no `python`)


def readme_commands() -> list[tuple[str, list[str]]]:
    """(program, arguments) of each `python -m agents.<x>` / `python benchmarks/<x>.py` line of the README's shell
    blocks, a `$ ` prompt dropped, continuation lines joined, a trailing `# comment` cut."""
    lines, found, fence = (REPO / "README.md").read_text().splitlines(), [], None
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            fence = lines[i][3:] if fence is None else None
        elif fence in SHELL_BLOCKS:
            line = lines[i].strip()
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            line = line.removeprefix("$ ")
            if match := re.match(r"python (-m agents\.\w+|benchmarks/\w+\.py)(.*)", line):
                found.append((match.group(1).removeprefix("-m "), shlex.split(match.group(2), comments=True)))
        i += 1
    return found


COMMANDS = readme_commands()
OWN_FILES = ("resume=", "config=", "checkpoint=")  # a run or saved config of the reader's


def checked(program: str) -> list[list[str]]:
    return [args for name, args in COMMANDS if name == program
            and not any(a.startswith(OWN_FILES) for a in args) and "--help" not in args]


def test_the_readme_s_commands_are_found():  # the parser above finds what it is meant to (a change of fences)
    programs = {name for name, _ in COMMANDS}
    assert {"agents.run", "agents.tune", "agents.benchmark", "agents.evaluate", "benchmarks/agents.py",
            "benchmarks/memory.py", "benchmarks/envs.py"} <= programs
    assert ["env=ContinualShift-v0"] in checked("agents.run")  # the main command


@pytest.mark.parametrize("args", checked("agents.run"), ids=" ".join)
def test_each_agents_run_line_is_accepted(args, tmp_path, monkeypatch, capsys):
    from agents import run_config
    from agents.run_config import early_answer

    monkeypatch.setattr(run_config, "_checked", {})  # what it made for main(): not left to another test's main()
    monkeypatch.chdir(tmp_path)  # runs_root=runs is relative: nothing is made there before training anyway
    assert early_answer(args) is None, capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", checked("agents.tune"), ids=" ".join)
def test_each_agents_tune_line_is_accepted(args, tmp_path, monkeypatch, capsys):
    from agents import tune_prepare
    from agents.tune_prepare import early_answer

    monkeypatch.setattr(tune_prepare, "_checked", {})
    monkeypatch.chdir(tmp_path)
    assert early_answer(args) is None, capsys.readouterr().err


def readme_suite_file() -> str:
    """The README's one ```yaml block: the suite file it shows (the `suite=<file>.yaml` line's)."""
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", (REPO / "README.md").read_text(), re.S | re.M)
    return block


@pytest.mark.parametrize("args", checked("agents.benchmark"), ids=lambda a: " ".join(a) or "(defaults)")
def test_each_agents_benchmark_line_is_accepted(args, tmp_path, monkeypatch):
    from agents.benchmark import load_suite, parse_args, plan

    monkeypatch.chdir(tmp_path)
    for suite in [a.partition("=")[2] for a in args if a.startswith("suite=") and a.endswith(".yaml")]:
        (tmp_path / suite).write_text(readme_suite_file())  # the suite file the README shows, as the reader wrote it
    try:
        opts, overrides = parse_args(args)
        assert plan(opts, load_suite(opts["suite"]), overrides, tmp_path / "out")
    except ConfigError as exc:
        pytest.fail(f"python -m agents.benchmark {shlex.join(args)}: {exc}")


@pytest.mark.parametrize("script", sorted({name for name, _ in COMMANDS if name.startswith("benchmarks/")}))
def test_each_benchmark_script_line_names_options_its_script_has(script):
    shown = subprocess.run([sys.executable, script, "--help"], cwd=REPO, env=repo_env(), capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    options = set(re.findall(r"--[\w-]+", shown.stdout))
    used = {a.split("=")[0] for name, args in COMMANDS if name == script for a in args if a.startswith("--")}
    assert used <= options, f"{script}: the README uses {sorted(used - options)}, which it does not have"


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory):
    """env id -> a finished one-episode run of it (the env's own options, a tiny model), made when first asked for:
    what the README's `checkpoint=runs/<env>/memnet/<time>_s0` stands for."""
    from agents import run
    from tests.test_run import TINY_MODEL

    root, made = tmp_path_factory.mktemp("readme_runs"), {}

    def of(env_id: str):
        if env_id not in made:
            made[env_id] = root / env_id
            assert run.main([f"env={env_id}", "train.episodes=1", *TINY_MODEL, f"run_dir={made[env_id]}"]) == 0
        return made[env_id]
    return of


@pytest.mark.parametrize("args", [args for name, args in COMMANDS if name == "agents.evaluate"], ids=" ".join)
def test_each_agents_evaluate_line_is_accepted_for_a_run_of_its_env(args, own_runs):
    """As `agents.evaluate` checks a line before its first evaluation: its arguments, then each evaluation's config
    and env (built with one lane) against the run's checkpoint."""
    from agents.checkpoint import CheckpointError
    from agents.evaluate import check_sweep
    from agents.evaluate_args import parse

    (checkpoint,) = [a for a in args if a.startswith("checkpoint=")]
    env_id = checkpoint.split("/")[1]  # checkpoint=runs/<env>/<agent>/...
    try:
        check_sweep(parse([f"checkpoint={own_runs(env_id)}" if a == checkpoint else a for a in args]))
    except (ConfigError, CheckpointError) as exc:
        pytest.fail(f"python -m agents.evaluate {shlex.join(args)}: {exc}")
