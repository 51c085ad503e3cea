"""Mutation-testing kills (round 5): the checks of a checkpoint's trainer fields and env files
(agents/checkpoint_fields.py) that no test reached, and the numbers, columns and sections of the tables that
benchmarks/slots.py, components.py and memory.py print (no timing is asserted: one round's ratio is its only one)."""

import copy
import re

import numpy as np
import pytest
import torch

from agents.checkpoint import CheckpointError
from agents.checkpoint_fields import check_env_files, check_env_files_there, check_trainer_fields
from tests.scripts import load_script, refused, run_main

EDGES = [1, 2, 4]
SOUND = {  # a trainer section as Trainer.trainer_state saves it: 1 block x 2 tasks, 2 lanes x 4 slots
    "episode": 2, "lane_steps": 40, "train_steps": 10, "train_tokens": 80, "train_seconds": 1.5,
    "reward_baseline": 0.1, "reset_log": [[0, 0], [1, 0], [1, 1], [0, 1]], "R": [[0.5, float("nan")]],
    "b": [0.5, 0.5], "task_boundaries": [0, 5], "curves": {"0": [[5, 0.5]], "1": []},
    "last_eval": {"0": 0.5, "1": 0.25}, "usage_history": [[0.0, 1.0, 2.0, 0.5]], "usage_steps": [10],
    "total_episodes": 4, "torch_threads": 2,
    "by_distance": {"edges": EDGES, "keys": EDGES, "correct": [0, 1, 2], "total": [0, 2, 2]},
    "by_delay": {"edges": None, "keys": [0, 3], "correct": [1, 0], "total": [1, 1]},
    "slot_lifetimes": {"step": 10, "born": torch.tensor([[-1, 0, 3, 10], [2, 2, -1, -1]]),
                       "done_counts": torch.tensor([0, 1, 2])},
}


def _check(tr: dict, *, slots: int | None = 4, counts: bool = True) -> None:
    check_trainer_fields(tr, "ckpt.pt", shape=(1, 2), lanes=2, slots=slots, edges=EDGES, counts=counts)


def _trainer(**changes) -> dict:
    tr = copy.deepcopy(SOUND)
    for key, value in changes.items():
        field, _, item = key.partition("__")
        if item:
            tr[field][item] = value
        else:
            tr[field] = value
    return tr


def test_sound_trainer_fields_pass_and_a_run_not_yet_evaluated_has_no_last_eval():
    _check(_trainer())
    _check(_trainer(), counts=False)
    _check(_trainer(last_eval={}))  # saved before its first evaluation


# case -> (changed fields, what the line names)
GARBLED = {
    "R accuracy below 0": ({"R": [[-0.5, 0.5]]}, "trainer.R:"),
    "last_eval accuracy below 0": ({"last_eval": {"0": -0.1, "1": 0.2}}, "trainer.last_eval[0]:"),
    "task_boundaries decreasing": ({"task_boundaries": [5, 0]}, "trainer.task_boundaries:"),
    "task_boundaries one past train_steps": ({"task_boundaries": [0, 11]}, "trainer.task_boundaries:"),
    "usage_steps decreasing": ({"usage_history": [[0.0] * 4, [1.0] * 4], "usage_steps": [10, 5]},
                               "trainer.usage_steps:"),
    "usage_steps past train_steps": ({"usage_steps": [11]}, "trainer.usage_steps:"),
    "usage below 0": ({"usage_history": [[0.0, -1.0, 0.0, 0.0]]}, "trainer.usage_history:"),
    "curves of no task": ({"curves": {}}, "trainer.curves:"),
    "train_seconds negative": ({"train_seconds": -1.0}, "trainer.train_seconds:"),
    "torch_threads 0": ({"torch_threads": 0}, "trainer.torch_threads:"),
    "by_distance keys not its edges": ({"by_distance__keys": [1, 2, 8]}, "trainer.by_distance.keys:"),
    "by_delay keys twice": ({"by_delay__keys": [3, 3]}, "trainer.by_delay.keys: [3, 3], not distinct"),
    "by_delay correct below 0": ({"by_delay__correct": [-1, 0]}, "trainer.by_delay: correct -1 of total 1"),
    "by_delay bucketed on resume": ({"by_delay": {"edges": [3], "keys": [3], "correct": [0], "total": [1]}},
                                    "trainer.by_delay.edges: [3], this env buckets by None"),
    "born after its step": ({"slot_lifetimes__born": torch.tensor([[-1, 0, 3, 11], [2, 2, -1, -1]])},
                            "trainer.slot_lifetimes.born: holds steps outside -1..10"),
    "born below -1": ({"slot_lifetimes__born": torch.tensor([[-2, 0, 3, 10], [2, 2, -1, -1]])},
                      "trainer.slot_lifetimes.born: holds steps outside -1..10"),
    "done_counts 2-D": ({"slot_lifetimes__done_counts": torch.zeros(2, 3, dtype=torch.int64)},
                        "trainer.slot_lifetimes.done_counts:"),
}


@pytest.mark.parametrize("case", list(GARBLED))
def test_a_garbled_trainer_field_is_named(case):
    changes, names = GARBLED[case]
    with pytest.raises(CheckpointError, match="does not hold what this memstream saves") as info:
        _check(_trainer(**changes))
    assert names in str(info.value), str(info.value)


def test_slot_lifetimes_in_a_run_without_a_slot_bank_are_named():
    no_bank = _trainer(usage_history=[], usage_steps=[])
    _check({**no_bank, "slot_lifetimes": None}, slots=None)
    with pytest.raises(CheckpointError, match=r"trainer\.slot_lifetimes: .*but this run has no slot bank"):
        _check(no_bank, slots=None)


def test_an_accuracy_matrix_of_another_shape_or_ragged_is_named():
    """The (blocks, tasks) check of R in its own right (before, only whole-run tests reached it)."""
    for R, got in (([[0.5, 0.5, 0.5]], "(1, 3)"), ([[0.5, 0.5], [0.5, 0.5]], "(2, 2)"), ([], "(0, 0)")):
        with pytest.raises(CheckpointError, match=re.escape(f"accuracy matrix has shape {got}, this run's "
                                                            "schedule needs (1, 2)")):
            _check(_trainer(R=R))
    with pytest.raises(CheckpointError, match=r"trainer\.R: .*not a \(blocks, tasks\) matrix"):
        _check(_trainer(R=[[0.5, 0.5], [0.5]]))


def test_bucketed_delay_counts_pass_when_they_are_recomputed():
    """agents.evaluate recomputes the counts (counts=False): their edges are not compared, only their form."""
    _check(_trainer(by_delay={"edges": [3], "keys": [3], "correct": [0], "total": [1]}), counts=False)


def test_an_env_file_digest_that_is_not_text_is_the_checkpoints_line():
    saved = {"haystack_path": {"path": "/x/hay.txt", "sha256": 5}}
    now = {"haystack_path": {"path": "/x/hay.txt", "sha256": "b" * 64}}
    with pytest.raises(CheckpointError, match=r"does not hold what this memstream saves \(env_files: "):
        check_env_files(saved, now, "ckpt.pt", False)


def test_env_files_there_skips_no_file_and_a_file_the_caller_gave(tmp_path):
    gone = str(tmp_path / "gone.txt")
    for evaluating in (False, True):
        check_env_files_there({"haystack_path": None}, "ckpt.pt", evaluating)  # the built-in Markov text
    # agents.evaluate env.kwargs.haystack_path=<path>: the env's own line names a missing file it was given
    check_env_files_there({"haystack_path": gone}, "ckpt.pt", True, given={"haystack_path": gone})
    with pytest.raises(CheckpointError, match="is not there any more"):
        check_env_files_there({"haystack_path": gone}, "ckpt.pt", True)


# --- benchmarks ---

def _kept_rows(monkeypatch, name: str) -> list:
    """benchmarks/<name>.py's run() results, kept as the script computed them (floats, not the printed text)."""
    script, results = load_script(name), []
    run = script.run
    monkeypatch.setattr(script, "run", lambda args: results.append(run(args)) or results[-1])
    return results


def _table(out: str, header: str) -> list[list[str]]:
    lines = out.splitlines()
    start = lines.index(header)
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start + 2:] if line]


SMALL_BANK = ["--lanes", "2", "--slots", "4", "--dim", "8", "--heads", "2", "--top-k", "2", "--chunk", "3",
              "--threads", "1", "--repeats", "1"]


# per call of a round (slots.py: layer step, bank step, layer chunk, bank chunk), ms over 3 rounds: the per-round
# ratios' median differs from the ratio of the medians and the mean from the median
FIXED_MS = [[1.0, 2.0, 3.0], [3.0, 1.0, 9.0], [4.0, 8.0, 6.0], [2.0, 40.0, 3.0]]


def _fixed_times(monkeypatch, script, shown: list | None = None):
    """The script's interleaved_ms answering FIXED_MS[i] (then 10 * (i + 1) per round) for its i-th callable."""
    def fixed(calls, repeats, warmup=3):
        if shown is not None:
            shown.append(len(calls))
        return [list(FIXED_MS[i]) if i < len(FIXED_MS) else [10.0 * (i + 1)] * 3 for i in range(len(calls))]
    monkeypatch.setattr(script, "interleaved_ms", fixed)


def test_the_slots_table_divides_the_bank_by_the_layer_and_counts_each_rows_tokens(monkeypatch, capsys):
    """Times are medians over rounds and the ratio the median of each round's bank / layer."""
    results = _kept_rows(monkeypatch, "slots")
    _fixed_times(monkeypatch, load_script("slots"))
    assert run_main("slots", SMALL_BANK, monkeypatch) == 0
    rows, = results
    step, chunk = "step (B=2, 1 token, window 3)", "chunk (B=2, T=3)"
    # step: layer 2, bank 3, ratios 3, 0.5, 3; chunk: layer 6, bank 3, ratios 0.5, 5, 0.5
    expected = [(step, 2.0, 3.0, 2, 3.0), (chunk, 6.0, 3.0, 6, 0.5)]
    assert rows == [(what, mode, *numbers) for mode in ("infer", "train") for what, *numbers in expected]
    header = "| work | mode | transformer layer ms | bank read+write ms | bank us/token | bank / layer |"
    assert _table(capsys.readouterr().out, header) == [
        [step, "infer", "2.00", "3.00", "1500.00", "3.00x"], [chunk, "infer", "6.00", "3.00", "500.00", "0.50x"],
        [step, "train", "2.00", "3.00", "1500.00", "3.00x"], [chunk, "train", "6.00", "3.00", "500.00", "0.50x"]]


def test_interleaved_ms_times_each_call_once_per_round_in_milliseconds(monkeypatch):
    script, order, now = load_script("slots"), [], [0.0]

    def clock():  # seconds; 2 ms pass between two readings
        now[0] += 0.002
        return now[0]

    monkeypatch.setattr(script, "time", type("Clock", (), {"perf_counter": staticmethod(clock)}))
    times = script.interleaved_ms([lambda: order.append("a"), lambda: order.append("b")], 2, warmup=1)
    assert order == ["a", "b"] * 3  # one warm-up round, then 2 timed ones
    assert times == [[pytest.approx(2.0)] * 2] * 2


def test_the_slots_train_rows_run_with_grad_and_the_infer_rows_without(monkeypatch, capsys):
    script, seen = load_script("slots"), []

    class Recording(script.MultiHeadMemoryBank):
        def forward(self, *args, **kwargs):
            seen.append(torch.is_grad_enabled())
            return super().forward(*args, **kwargs)

    monkeypatch.setattr(script, "MultiHeadMemoryBank", Recording)
    assert run_main("slots", SMALL_BANK, monkeypatch) == 0
    timed = seen[1:]  # the first call fills the bank
    half = len(timed) // 2
    assert half > 0 and timed == [False] * half + [True] * half, seen


def test_slots_takes_top_k_equal_to_slots_and_a_width_the_store_attention_heads_do_not_divide(monkeypatch,
                                                                                             capsys):
    """The bank reads all its slots at --top-k = --slots; --dim 6: the store's 4 attention heads are no part of it."""
    assert run_main("slots", ["--lanes", "1", "--slots", "4", "--top-k", "4", "--dim", "6", "--heads", "2",
                              "--chunk", "2", "--threads", "1", "--repeats", "1"], monkeypatch) == 0
    assert "N=4 slots, D=6, H=2 heads, k=4" in capsys.readouterr().out


def test_components_ratio_is_component_over_layer_and_only_chunk_rows_run_a_backward(monkeypatch, capsys):
    """The layer is each setting's first call and the reference of every row; chunk rows time a backward."""
    script, results, backward, sizes = load_script("components"), _kept_rows(monkeypatch, "components"), [], []
    timed = script.timed
    monkeypatch.setattr(script, "timed", lambda fn, inputs, grad: backward.append(grad) or timed(fn, inputs, grad))
    _fixed_times(monkeypatch, script, sizes)
    assert run_main("components", ["--lanes", "1", "--threads", "1", "--repeats", "1"], monkeypatch) == 0
    (shapes, rows), = results
    assert sizes == [7, 9]  # step: the layer and 6 components; chunk: the layer, 6 components, regularisers, metrics
    # each setting's calls: the layer FIXED_MS[0] (median 2), then FIXED_MS[1:] and 10 * (i + 1) per round; the
    # ratio is the median of the rounds' (FIXED_MS[1]: 3, 0.5, 3 -> 3; [2]: 4, 4, 2 -> 4; [3]: 2, 20, 1 -> 2)
    medians = [3.0, 6.0, 3.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    ratios = [3.0, 4.0, 2.0, 25.0, 30.0, 35.0, 40.0, 45.0]
    expected = [(setting, 2.0, ms, ratio) for setting, n in (("step", 6), ("chunk", 8))
                for ms, ratio in zip(medians[:n], ratios[:n], strict=True)]
    assert [(setting, layer_ms, ms, pytest.approx(ratio)) for _, setting, layer_ms, ms, ratio in rows] == expected
    assert backward == [False] * 7 + [True] * 8 + [False]
    assert "D=128, H=4 heads, window 64, chunk 32, step = 3 tokens read at the last, k=8 memories" in shapes


def _memory_rows(monkeypatch, capsys, *args: str) -> dict[str, tuple[str, str]]:
    assert run_main("memory", ["--repeats", "1", "--cache-repeats", "1", *args], monkeypatch) == 0
    out = capsys.readouterr().out
    return {a: (b, c) for a, b, c in re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \|$", out, re.M)}


def test_memory_exact_section_names_each_measure_its_own_number(monkeypatch, capsys):
    """Fixed seconds for the two fills and the three searches: each row shows its own; ids after clear() are past
    the rows (id % rows is the row torch finds); the bytes per entry are the store's over its entries."""
    script = load_script("memory")
    fill, median_s = script.fill, script.median_s
    fills, searches = iter([1e-3, 0.5e-3]), iter([0.004, 0.002, 0.001])
    monkeypatch.setattr(script, "fill", lambda *args: (fill(*args), next(fills))[1])
    monkeypatch.setattr(script, "median_s", lambda fn, repeats, warmup=1: (median_s(fn, 1, 0), next(searches))[1])
    rows = _memory_rows(monkeypatch, capsys, "--entries", "1000", "--only", "exact")
    assert rows["add, fresh store (incl. first-touch page faults)"] == ("1.00 M entries/s", ">= 1 M/s")
    assert rows["add, refill after clear()"] == ("2.00 M entries/s", ">= 1 M/s")
    assert rows["exact search, 64 queries top-8 (FaissStore)"] == ("4 ms", "<= torch matmul+topk")
    assert rows["  torch matmul + topk, same data"] == ("2 ms", "reference")
    assert rows["  faiss IndexFlatIP, same data"] == ("1 ms", "reference")
    assert rows["  exact ids equal torch's"] == ("True", "True")
    per_entry = int(rows["memory per entry (D=128, Dv=128, exact)"][0].removesuffix(" B"))
    assert 4 * (128 + 128) <= per_entry < 2 * 4 * (128 + 128)  # float32 key and value, and some bookkeeping


def test_memory_ivf_section_with_one_list_recalls_every_exact_neighbour(monkeypatch, capsys):
    """One list probed: an exhaustive scan, so recall@8 is 1 (a share of the 8, not of the 64 queries)."""
    rows = _memory_rows(monkeypatch, capsys, "--entries", "200", "--ivf-lists", "1", "--only", "ivf")
    assert "IVF add incl. training (1 lists)" in rows and "IVF search, 64 queries top-8 (1 probes)" in rows
    assert rows["IVF recall@8 vs exact, clustered data"] == ("1.000", ">= 0.95")


def test_memory_cache_section_reports_each_tiers_own_bytes(monkeypatch, capsys):
    rows = _memory_rows(monkeypatch, capsys, "--cache-entries", "100", "--only", "cache")
    hot, warm = (int(rows[f"  bytes per entry, {tier}"][0].removesuffix(" B")) for tier in ("hot", "warm"))
    assert warm < hot / 2  # the warm tier keeps int8 codes, the hot tier float32
    assert "  bytes per entry, cold (on disk)" in rows and "  bytes per entry, warm (on disk)" not in rows
    assert rows["get_batch(100 ids), warm tier"][1] == "<= 0.3 ms"


def test_memory_precision_section_gives_the_bf16_speed_up_as_fp32_over_bf16(monkeypatch, capsys):
    script = load_script("memory")
    median_s, searches = script.median_s, iter([0.004, 0.002, 0.003, 0.006])  # fp32, bf16 at 256; then at 768
    monkeypatch.setattr(script, "median_s", lambda fn, repeats, warmup=1: (median_s(fn, 1, 0), next(searches))[1])
    rows = _memory_rows(monkeypatch, capsys, "--only", "precision")
    assert rows["exact search, keys 256 wide, fp32"][0] == "4.0 ms"
    assert rows["exact search, keys 256 wide, bf16"] == ("2.0 ms (2.0x)", "faster where auto picks it")
    assert rows["exact search, keys 768 wide, fp32"][0] == "3.0 ms"
    assert rows["exact search, keys 768 wide, bf16"][0] == "6.0 ms (0.5x)"


def test_memory_undo_section_gives_each_ways_take_and_put_back_times_and_what_it_holds(monkeypatch, capsys):
    """A clock read 4 times per round (before and after taking, before and after putting back) that moves 1, 7, 3
    and 11 ms between its readings: taking is 7 ms and putting back 11; each way's first round (allocations on first
    touch, 100 and 500 ms here) is not counted. The main command's store alone is 16 lanes x 3,000 entries of float32
    keys 384 and values 128 wide."""
    script, now = load_script("memory"), [0.0]
    ticks = iter(([0.001, 0.1, 0.003, 0.5] + [0.001, 0.007, 0.003, 0.011]) * 50)  # --repeats 1: 2 rounds a way

    def clock():
        now[0] += next(ticks)
        return now[0]

    monkeypatch.setattr(script, "time", type("Clock", (), {"perf_counter": staticmethod(clock)}))
    rows = _memory_rows(monkeypatch, capsys, "--only", "undo")
    whole, mark = rows["a whole snapshot (state_dict, load_state_dict)"][0], rows["a mark (mark, undo)"][0]
    assert whole.startswith("take 7.0 ms, put back 11.0 ms, holds ")
    assert mark.startswith("take 7.0 ms, put back 11.0 ms, holds ")
    held = float(re.search(r"holds ([\d.]+) MiB", whole)[1])
    assert 16 * 3000 * (384 + 128) * 4 / 2**20 <= held < 1024


def test_held_bytes_counts_the_arrays_in_dicts_lists_and_tuples_only():
    held_bytes = load_script("memory").held_bytes
    assert held_bytes({"a": [np.zeros(4, np.float32), (torch.zeros(2, dtype=torch.float64),)], "clock": 3,
                       "format": "x", "changed": {1, 2}}) == 16 + 16


def test_memory_runs_every_section_in_order_or_the_one_asked_for(monkeypatch, capsys):
    script = load_script("memory")
    names = ("exact", "ivf", "precision", "coded", "cache", "undo")
    for name in names:
        monkeypatch.setattr(script, f"{name}_rows", lambda args, rng, name=name: [(name, f"{name} result", "target")])
    assert run_main("memory", ["--repeats", "1"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^\| (\w+) \| (\w+) result \| target \|$", out, re.M) == [(n, n) for n in names]
    assert out.count("| measure | result | target |") == 6
    assert run_main("memory", ["--repeats", "1", "--only", "coded"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "### FaissStore with coded keys" in out and out.count("### ") == 1 and "| coded | coded result |" in out


@pytest.mark.parametrize("args, message", [
    (["--only", "exact", "--entries", "7"], "--entries: must be at least 8"),
    (["--only", "cache", "--cache-entries", "99"], "--cache-entries: must be at least 100"),
])
def test_memory_sizes_one_below_what_a_measure_needs_are_refused(args, message, monkeypatch, capsys):
    _, err = refused("memory", ["--repeats", "1", "--cache-repeats", "1", *args], monkeypatch, capsys)
    assert message in err, err
