"""The scripts under benchmarks/: bad arguments refused with a usage line, agent throughput, plain batches."""

import pytest

from tests.scripts import load_script, refused, run_main
from tests.test_run import TINY_MODEL

REFUSED = [
    ("envs.py", ["--repeats", "0"], "argument --repeats: '0': must be an integer >= 1"),  # was StatisticsError
    ("envs.py", ["--seconds", "-1"], "argument --seconds: '-1': must be a number of seconds > 0 and <= 600"),  # was
    # 0 steps/s; unbounded, --seconds 1e9 started 18 timed runs of 32 years each
    ("envs.py", ["--seconds", "1e9"], "argument --seconds: '1e9': must be a number of seconds > 0 and <= 600"),
    ("envs.py", ["--seconds", "0"], "argument --seconds: '0': must be a number of seconds > 0 and <= 600"),
    ("envs.py", ["--seconds", "nan"], "argument --seconds: 'nan': must be a number of seconds > 0 and <= 600"),
    ("envs.py", ["--lanes", "0"], "argument --lanes: '0': must be an integer in [1, 65,536]"),
    # the env's own limit: refused after the table's header, with a traceback
    ("envs.py", ["--lanes", "1000000000"], "argument --lanes: '1000000000': must be an integer in [1, 65,536]"),
    ("slots.py", ["--heads", "3"], "--heads=3: must be >= 1 and divide --dim 128"),  # was a traceback
    ("slots.py", ["--top-k", "500", "--slots", "8"], "--top-k 500: at most --slots (8)"),  # the header said k=500
    ("agents.py", ["--env", "Foo"], "--env Foo: not a memstream env; choose one of: "),  # was CalledProcessError
    # another package's gym id failed in the measuring process: a CalledProcessError without its reason
    ("agents.py", ["--env", "CartPole-v1"], "--env CartPole-v1: not a memstream env"),
    # these measured another agent, env or lane count under the table's header
    ("agents.py", ["--variant", "x:agent=transformer"], "agent=transformer is the benchmark's own setting"),
    ("agents.py", ["--variant", "x:memory.slots=8,train.lanes=4"], "train.lanes=4 is the benchmark's own setting"),
    # a list value is one override (it was split at its comma and refused as malformed)
    ("agents.py", ["--variant", "x:env.kwargs.num_tasks=[1,2]"], "env.kwargs.num_tasks"),
    ("memory.py", ["--entries", "x"], "argument --entries: 'x' is not an integer >= 1"),
    # numpy's _ArrayMemoryError traceback (46.6 TiB)
    ("memory.py", ["--entries", "100000000000", "--only", "exact"], "exact: does not fit in memory (an allocation of "),
    # torch's "DefaultCPUAllocator: can't allocate memory" traceback
    ("slots.py", ["--chunk", "100000000", "--repeats", "1"], "error: does not fit in memory (an allocation of 35.5 PiB "
     "failed); lower --lanes, --slots, --dim or --chunk"),
    ("components.py", ["--lanes", "100000000", "--repeats", "1"], "error: does not fit in memory (an allocation of "),
    # the cache's ColdTierError (an OSError) passed the row check as a traceback
    ("agents.py", ["--agents", "memnet", "--variant", "big:memory.cache_cold=4000000000"], "--variant "
     "'big:memory.cache_cold=4000000000': its model: the cache's cold tier needs "),
    ("agents.py", ["--variant", "slots=0"], "--variant 'slots=0': write NAME:KEY=VALUE[,KEY=VALUE...]"),
    ("agents.py", ["--variant", "x:memory.slot=0"], "unknown config key 'memory.slot'"),  # checked before measuring
    ("agents.py", ["--variant", "gru:memory.slots=0"], "the name 'gru' is taken"),
    # an agent's name not in --agents: the ratios and the target line read that row as the default MemNet
    ("agents.py", ["--agents", "transformer", "--variant", "memnet:memory.store=false"], "the name 'memnet' is taken "
     "(an agent's name: the cost ratios and the target line read that row as the agent); give each row its own"),
    ("agents.py", ["--agents", "memnet,gru,memnet"], "--agents memnet,gru,memnet: 'memnet' is given twice"),
    ("agents.py", ["--variant", "x:memory.slots=4,memory.slots=8"],
     "memory.slots= is given 2 times ('4', '8'); give it once"),
    # torch.set_num_threads(100000): a segmentation fault (exit -11), no line
    ("slots.py", ["--threads", "100000"], "argument --threads: '100000': must be an integer in [1, 1024]"),
    ("components.py", ["--threads", "1025"], "argument --threads: '1025': must be an integer in [1, 1024]"),
    ("memory.py", ["--threads", "100000"], "argument --threads: '100000': must be an integer in [1, 1024]"),
    # FaissStore's ValueError traceback after the header (its threads are bounded as torch's)
    ("memory.py", ["--faiss-threads", "100000", "--only", "exact", "--entries", "8"],
     "argument --faiss-threads: '100000': must be an integer in [1, 1024]"),
    ("agents.py", ["--threads", "100000"], "argument --threads: '100000': must be an integer in [1, 1024]"),
]


@pytest.mark.parametrize("script, args, message", REFUSED)
def test_benchmark_scripts_refuse_bad_arguments_with_their_usage_line(script, args, message, monkeypatch, capsys):
    _, err = refused(script.removesuffix(".py"), args, monkeypatch, capsys)
    assert message in err, err


@pytest.mark.parametrize("script", ["envs.py", "slots.py", "memory.py", "components.py", "agents.py"])
def test_a_benchmark_script_run_as_a_process_gives_its_usage_line_and_exit_2(script):
    """The same refusals from the script's own process (`python benchmarks/<script> ...`, its imports and
    `run_script`): the first case of each script above."""
    import subprocess
    import sys

    from tests.scripts import BENCHMARKS

    args, message = next((args, message) for name, args, message in REFUSED if name == script)
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("args, message", [
    (["--variant", "gpu:device=cuda"], "--variant 'gpu:device=cuda': device=cuda but no CUDA device is visible"),
    # 224 TiB: beyond any machine's address space (agents.run's "does not fit in memory" line)
    (["--variant", "big:memory.store_capacity=10000000000"], "--variant 'big:memory.store_capacity=10000000000': "
     "its model does not fit in memory (an allocation of "),
    # the variant's config was checked at 16 lanes, not --lanes: 32 x 128 memories per call, 2048 slots
    (["--lanes", "128", "--variant", "shared:memory.store_scope=shared,memory.store_capacity=2048"],
     "memory.store_capacity=2048: a chunk call writes up to 4096 memories"),
    # the vector env's limit (train.lanes's): every measuring process failed on it
    (["--lanes", "1000000000"], "argument --lanes: '1000000000': must be an integer in [1, 65,536]"),
])
def test_agent_throughput_refuses_a_row_that_would_fail_before_anything_is_measured(args, message, monkeypatch,
                                                                                   capsys):
    """benchmarks/agents.py measured the rows before a bad one (minutes each), then failed in its measuring process
    (exit 1, `error: measuring gpu failed: ...`): now the usage line at once, and no row is measured."""
    if "device=cuda" in message and _cuda_visible():
        pytest.skip("CUDA is visible here: device=cuda is a valid variant")
    out, err = refused("agents", ["--agents", "transformer", "--episodes", "1", "--warmup", "0", "--threads", "1",
                                  *args], monkeypatch, capsys)
    assert message in err, err
    assert "measuring" not in err and out == ""  # no table: nothing was measured


@pytest.mark.parametrize("args, verdict", [
    ([], "target (MemNet >= 20,000 tokens/s and <= 1.5x transformer): met"),
    (["--episodes", "2", "--threads", "1"], "target (MemNet >= 20,000 tokens/s and <= 1.5x transformer): met"),
    # NeedleRecall's, step acting's or a fuller store's numbers measure another thing: they read "NOT met" or "met"
    (["--env", "NeedleRecall-v0", "--acting", "step"], "target (MemNet >= 20,000 tokens/s and <= 1.5x transformer): "
     "not judged here (--env NeedleRecall-v0, --acting step); it applies to the default setting (--env "
     "ContinualShift-v0, --lanes 16, --warmup 1, --acting auto)"),
    (["--lanes", "64"], "not judged here (--lanes 64)"),
    (["--warmup", "28"], "not judged here (--warmup 28)"),
])
def test_the_agent_throughput_target_is_judged_on_its_own_setting_only(args, verdict, monkeypatch, capsys):
    """The measuring processes answered with fixed numbers (MemNet 30,000 tokens/s at 1.33x): the verdict line is
    the target's own only where the setting is the one the target is stated for."""
    import json
    import subprocess

    module = load_script("agents")
    speed = {"memnet": 30_000.0, "transformer": 40_000.0}

    def measured(cmd, **kwargs):
        agent = cmd[cmd.index("--one") + 1]
        result = {"agent": agent, "device": "cpu", "params": 1, "tokens_per_s": speed[agent],
                  "plain_tokens_per_s": speed[agent],
                  "peak_rss_mib": 1.0, "act_ms": None, "learn_ms": 1.0, "update_ms": 1.0, "act_calls": 0, "chunks": 5,
                  "shares": {"act": 0.0, "learn": 0.5, "update": 0.4, "rest": 0.1}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result), "")

    monkeypatch.setattr(module.subprocess, "run", measured)
    for name in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME"):  # the header names the wait settings in force: this one only
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert run_main("agents", ["--agents", "memnet,transformer", *args], monkeypatch) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert verdict in lines[-1] and ("not judged" in verdict) == ("not judged" in lines[-1]), lines[-1]
    # how the threads waited moves tokens/s by up to 2x: the header says (README "Threads on a busy machine")
    threads = 2 if "--threads" not in args else int(args[args.index("--threads") + 1])  # the script's default: 2
    want = f" {threads} torch thread{'s' * (threads != 1)} (OMP_WAIT_POLICY=PASSIVE), "
    assert want in lines[0], lines[0]


def test_rows_measured_on_a_gpu_are_not_judged_against_the_cpu_target(monkeypatch, capsys):
    """device=auto trains on CUDA where it is visible: the header says where the rows ran, and the verdict (stated
    for 2 CPU cores) is not given for them, whatever the numbers."""
    import json
    import subprocess

    module = load_script("agents")

    def measured(cmd, **kwargs):
        agent = cmd[cmd.index("--one") + 1]
        result = {"agent": agent, "device": "cuda (NVIDIA H200)", "params": 1, "tokens_per_s": 90_000.0,
                  "plain_tokens_per_s": 90_000.0, "peak_rss_mib": 1.0, "act_ms": None, "learn_ms": 1.0,
                  "update_ms": 1.0, "act_calls": 0, "chunks": 5,
                  "shares": {"act": 0.0, "learn": 0.5, "update": 0.4, "rest": 0.1}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result), "")

    monkeypatch.setattr(module.subprocess, "run", measured)
    assert run_main("agents", ["--agents", "memnet,transformer"], monkeypatch) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith(", 1 round(s), on cuda (NVIDIA H200)"), lines[0]
    assert lines[-1] == ("target (MemNet >= 20,000 tokens/s and <= 1.5x transformer): not judged here (on cuda "
                         "(NVIDIA H200)); it applies to 2 CPU cores (device=cpu)")


@pytest.mark.parametrize("acting", ["auto", "step", "agent"])
def test_the_agent_throughput_benchmark_measures_the_acting_it_names(acting, monkeypatch, capsys):
    """benchmarks/agents.py (the README's throughput tables): chunk acting (auto) makes no acting call, step acting
    one per step scored in some lane (ContinualShift asks every third step: 50 per 151-step episode), and so does the
    step acting an `agents.agent.Agent` does when the script's loop pushes the steps. Its main() runs here; each agent
    is measured in a process of its own, as always."""
    code = run_main("agents", ["--agents", "transformer", "--episodes", "1", "--warmup", "0", "--lanes", "2",
                               "--threads", "1", "--acting", acting], monkeypatch)
    out, err = capsys.readouterr()
    assert code == 0, err
    pushed = "train.acting=step pushed by agents.agent.Agent,"
    assert (f"train.acting={acting}," if acting != "agent" else pushed) in out
    calls = 0 if acting == "auto" else 50
    assert f"where the time goes, per episode: {calls} acting calls, 5 learning chunks" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| transformer | 462,592 |"))
    cells = row.split("|")
    assert float(cells[3].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0  # trainer, plain batches
    assert cells[4].strip() == cells[6].strip() == "1.00x"  # the transformer against itself


def test_a_variant_row_measures_memnet_with_its_overrides_against_the_transformer(monkeypatch, capsys):
    code = run_main("agents", ["--agents", "transformer", "--episodes", "1", "--warmup", "0", "--lanes", "2",
                               "--threads", "1", "--variant", "small:model.dim=32,memory.store=false"], monkeypatch)
    out, err = capsys.readouterr()
    assert code == 0, err
    row = next(ln for ln in out.splitlines() if ln.startswith("| small |")).split("|")
    assert int(row[2].replace(",", "")) < 100_000  # its own model: width 32, no store (default MemNet: 735,089)
    assert float(row[3].replace(",", "")) > 0 and row[4].strip().endswith("x")  # tokens/s, cost vs transformer
    assert any(ln.startswith("| small |") for ln in out.split("where the time goes")[1].splitlines())


def test_the_time_split_names_each_rows_calls_and_chunks_where_they_differ(capsys):
    """The header gave the first row's acting calls and chunks for every row: a variant with another train.chunk, or
    with dropout (step acting under auto), made others."""
    module = load_script("agents")
    row = {"act_ms": None, "learn_ms": 30.0, "update_ms": 20.0, "shares": dict.fromkeys(("act", "learn", "update",
                                                                                       "rest"), 0.25)}
    rounds = [{"memnet": row | {"act_calls": 0, "chunks": 5}, "c16": row | {"act_calls": 0, "chunks": 10}}]
    module.print_split(["memnet", "c16"], rounds)
    assert "where the time goes, per episode: acting calls, learning chunks: memnet 0, 5; c16 0, 10" in \
        capsys.readouterr().out
    rounds[0]["c16"]["chunks"] = 5
    module.print_split(["memnet", "c16"], rounds)
    assert "where the time goes, per episode: 0 acting calls, 5 learning chunks" in capsys.readouterr().out


@pytest.mark.parametrize("clip", ["1.0", "0"])  # 0: no clipping, as in the trainer (clipping to 0 zeroed gradients)
def test_plain_batches_learn_and_write_every_position_with_the_state_carried(tmp_path, clip):
    """The plain-batch reference of benchmarks/agents.py trains the trainer's own model and optimiser: weights move,
    MemNet writes every position of every batch (warm-up included) and the state is carried from chunk to chunk."""
    import torch

    from agents.config import load_config
    from agents.trainer import Trainer

    module = load_script("agents")
    cfg = load_config([*TINY_MODEL, "env=LongDependency-v0", "memory.store_replace=0", "train.lanes=2",
                       "train.chunk=8", f"train.grad_clip={clip}", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    pos = int(trainer.state["ctrl.pos"][0])
    assert module.plain_batches(trainer, 3, warmup=1) > 0
    assert len(trainer.model.store) == 4 * 2 * 8  # (warm-up + 3 chunks) x lanes x chunk
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)
               if p.grad is not None)
    assert int(trainer.state["ctrl.pos"][0]) == pos  # the trainer's own state is not advanced


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_a_benchmark_script_is_one_line(signame):
    """Was a KeyboardInterrupt traceback (every script under benchmarks/); SIGTERM (`kill <pid>`, a scheduler's stop)
    ended one at once, exit -15 and no line (benchmarks/agents.py's measuring process ended with it, unsaid)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "envs.py"
    proc = subprocess.Popen([sys.executable, str(path), "--repeats", "50"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while "| env |" not in proc.stdout.readline():  # measuring: past the imports
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted; what is printed above was measured, nothing after it"


def test_a_timed_run_shorter_than_one_loop_still_measures_it():
    """benchmarks/envs.py --seconds 1e-9 printed rows of 0 steps/s: the loop never ran."""
    module = load_script("envs")
    calls = []
    wall, cpu = module.timed(lambda: calls.append(sum(range(100_000))) or 1000, 1e-9)  # ~1 ms of CPU
    assert len(calls) == 1 and wall > 0 and cpu > 0


@pytest.mark.parametrize("platform, mib", [("linux", 3 * 2**20 / 2**10), ("darwin", 3.0)])
def test_peak_rss_is_read_in_the_unit_each_platform_gives_it(platform, mib, monkeypatch):
    """ru_maxrss counts KiB on Linux and bytes on macOS: the agents' table read 1024x too much memory there."""
    import resource
    import sys
    from types import SimpleNamespace

    module = load_script("agents")
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=3 * 2**20))
    monkeypatch.setattr(sys, "platform", platform)
    result = module.measure("gru", "LongDependency-v0", 1, 2, 1, warmup=0, overrides=tuple(TINY_MODEL))
    assert result["peak_rss_mib"] == mib and result["tokens_per_s"] > 0


@pytest.mark.parametrize("lanes, verdict", [
    (256, "targets met (per CPU second)"),
    (2, "scalar target (vector: not judged at --lanes 2; 256) met (per CPU second)"),  # said "targets met"
])
def test_the_env_throughput_verdict_judges_the_vector_target_at_256_lanes_only(lanes, verdict, monkeypatch, capsys):
    module = load_script("envs")
    monkeypatch.setattr(module, "scalar_steps_per_s", lambda env_id, seconds: (6e5, 6e5))
    monkeypatch.setattr(module, "vector_tokens_per_s", lambda env_id, n, seconds: (4e5 * n, 4e5 * n))  # 2 lanes: 8e5
    assert run_main("envs", ["--lanes", str(lanes), "--repeats", "1"], monkeypatch) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == verdict
