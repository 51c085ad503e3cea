"""benchmarks/components.py: one table row per component and setting, with finite positive times."""

import math

from tests.scripts import load_script, run_main

STEP = ["LM2Memory", "LinformerMemory", "MemoryAttention (store read, k=8)", "Fusion gated (R=2)",
        "Fusion concat (R=2)", "Fusion cross_attention (R=2)"]
CHUNK_ONLY = ["memory_regularisers (3 terms)", "per-chunk metrics (4, forward only)"]


def test_components_benchmark_prints_one_row_per_component_and_setting(capsys, monkeypatch):
    script, results = load_script("components"), []
    run = script.run
    monkeypatch.setattr(script, "run", lambda args: results.append(run(args)) or results[-1])  # keep the floats
    assert run_main("components", ["--lanes", "2", "--threads", "1", "--repeats", "1"], monkeypatch) == 0
    expected = [(name, "step") for name in STEP] + [(name, "chunk") for name in STEP + CHUNK_ONLY]
    (_, rows), = results
    assert [(name, setting) for name, setting, *_ in rows] == expected
    for _, _, layer_ms, component_ms, ratio in rows:
        assert all(math.isfinite(v) and v > 0 for v in (layer_ms, component_ms, ratio))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Memory components at MemNet's ContinualShift-v0 shapes: B=2 lanes")
    header = lines.index("| component | setting | transformer layer ms | component ms | component / layer |")
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[header + 2:] if line]
    assert [(name, setting) for name, setting, *_ in table] == expected
    assert all(ratio.endswith("x") for *_, ratio in table)
