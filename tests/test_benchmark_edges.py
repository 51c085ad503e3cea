"""agents.benchmark edges: ~ in out= and suite=, the ETA and the idle-machine estimate, list-valued probes."""

import yaml

from agents import benchmark
from tests.test_benchmark import NR


def test_out_and_suite_expand_a_leading_tilde(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "mine.yaml").write_text(yaml.safe_dump({"envs": {NR: {}}, "variants": {"m": {"agent": "lstm"}}}))
    opts, _ = benchmark.parse_args(["suite='~/mine.yaml'", "out=~/bench"])
    assert opts["suite"] == str(home / "mine.yaml")  # was '~/mine.yaml': "suite file ... not found"
    assert opts["out"] == str(home / "bench")  # was '~/bench': a folder named ~ in the working folder
    # the whole command: the suite is found and read (the error is the unknown variant's), nothing made under ./~
    assert benchmark.main(["suite=~/mine.yaml", "out='~/bench'", "agents=gru"]) == 2
    assert "gru is not in the suite; choose from: m" in capsys.readouterr().err
    assert not (tmp_path / "~").exists()


def test_eta_does_not_split_the_last_runs_between_idle_workers():
    """ETA was the seconds left summed over every run, divided by workers: 30 s for one 60 s run left of 2 at a
    time, 3 x 60 / 16 = 11 s for the last three of a full suite at workers=16."""
    from agents import benchmark_runner
    from agents.benchmark_runner import Job, eta_s

    done = [{"env": NR, "variant": "memnet", "wall_s": 60.0}, {"env": NR, "variant": "lstm", "wall_s": 20.0}]
    memnet, lstm = (Job(NR, v, v, 1, None, []) for v in ("memnet", "lstm"))
    assert eta_s(done, [], {1: (memnet, 100.0)}, workers=2, now=100.0) == 60.0  # one run left: its own 60 s
    assert eta_s(done, [memnet] * 3, {}, workers=16) == 60.0  # three side by side
    # two workers: the 60 s run in flight 10 s, then lstm runs start on the idle one: 20 + 20 + 20 = 60 > 50 left
    assert eta_s(done, [lstm] * 3, {1: (memnet, 0.0)}, workers=2, now=10.0) == 60.0
    assert eta_s(done, [lstm, lstm], {1: (memnet, 0.0)}, workers=2, now=10.0) == 50.0  # 40 on one, 50 on the other
    assert benchmark_runner.minutes(eta_s(done, [memnet], {}, workers=4)) == "1 min 00 s"


def test_a_probe_of_a_list_option_gives_agents_evaluate_the_list():
    """A suite's `probes.vary: {distances: [[1, 2, 4], [8, 16]]}` passed the plan's check (the env takes each list),
    then every probed run trained and its probe failed: agents.evaluate got the text '[1, 2, 4]' ("distances must be
    a non-empty list of integers ..., got '[1, 2, 4]'")."""
    from agents.benchmark_runner import Job, probe_command
    from agents.evaluate_args import override_grid

    job = Job("LongDependency-Easy-v0", "lstm", "lstm", 0, "/r", [])
    command = probe_command(job, "distances", [[1, 2, 4], [8, 16]])
    assert command[-2] == "env.kwargs.distances=[1,2,4],[8,16]"
    assert override_grid(command[-2:-1]) == [({"distances": [1, 2, 4]}, {}), ({"distances": [8, 16]}, {})]
    assert probe_command(job, "haystack_path", ["/a b/x,y.txt", None])[-2] == \
        "env.kwargs.haystack_path='/a b/x,y.txt',null"


def test_results_md_estimates_an_idle_machines_wall_time_no_shorter_than_its_longest_run():
    """The estimate was the CPU time over workers: one 60 s run beside a 6 s one at workers=16 read "about 0.1 min
    of wall time"; a run is not split between workers, so it is at least the longest run's 1 min 00 s."""
    from agents.benchmark_markdown import markdown
    from agents.benchmark_report import aggregate

    runs = [{"env": NR, "variant": v, "agent": v, "seed": 0, "status": "ok", "metrics": {"accuracy": 0.5},
             "run_dir": f"/r/{v}", "cpu_s": cpu, "wall_s": cpu} for v, cpu in (("memnet", 60.0), ("lstm", 6.0))]
    context = {"suite": "t", "command": "c", "machine": "m", "started": "now", "wall_s": 70.0, "workers": 16}
    text = markdown(aggregate(runs), [], runs, context)
    assert "CPU time 1.1 min, i.e. about 1 min 00 s of wall time at 16 runs at a time" in text
    context["workers"] = 1
    assert "CPU time 1.1 min, i.e. about 1 min 06 s of wall time at 1 run at a time" in markdown(
        aggregate(runs), [], runs, context)


def test_a_run_folder_hydra_would_misread_reaches_agents_run_as_it_is():
    """`out=/tmp/results (1)`: every run got `run_dir=/tmp/results (1)/...` bare, which Hydra's grammar refused
    ("mismatched input ' ('"), so every run of the benchmark failed; `n,2` read as a sweep."""
    from pathlib import Path

    from agents.benchmark_runner import Job, run_command
    from agents.run_config import config_for

    for folder in ("/tmp/results (1)/LongDependency-Easy-v0/lstm/s0", "/tmp/n,2/x", "/tmp/it's/x", "/tmp/plain/x"):
        command = run_command(Job("LongDependency-Easy-v0", "lstm", "lstm", 0, Path(folder), []))
        cfg = config_for(command[3:])[0]
        assert cfg.run_dir == folder, command
    assert "run_dir=/tmp/plain/x" in command  # bare where Hydra reads it as it is
