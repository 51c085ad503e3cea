"""The approximate indexes' settings (`memory.store_ivf_*`, `memory.store_hnsw_*`) reach the store a run builds,
are checked with one line each, and checkpoints written before they were config keys still resume."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import run
from agents.checkpoint import CheckpointError, check_compatible
from agents.config import ConfigError, load_config, memory_config
from agents.models import ModelConfig, build_model
from memory.config import MemoryConfig
from memory.store import FaissStore
from tests.examples import examples
from tests.test_run import tiny

RNG = np.random.default_rng(0)


def memnet_after_one_write(*overrides):
    """A small MemNet built from the run config, after one chunk call has made its store."""
    cfg = load_config(["env=ContinualShift-v0", "model.dim=32", "model.heads=2", "memory.attn_heads=2",
                       "memory.read_heads=2", *overrides])
    mc = ModelConfig(vocab_size=256, memory=memory_config(cfg), **{k: cfg.model[k] for k in cfg.model})
    model = build_model("memnet", mc).eval()
    with torch.no_grad():
        model(torch.randint(1, 256, (2, 8)), model.initial_state(2), torch.ones(2, 8, dtype=torch.bool))
    return model


def test_ivf_settings_reach_every_partition_of_a_runs_store():
    store = memnet_after_one_write("memory.store_index=ivf", "memory.store_ivf_lists=16",
                                   "memory.store_ivf_probes=3").store
    assert [(a.lists, a.probes, a.min_entries) for a in store._ann] == [(16, 3, 16 * 39)] * 2
    auto = memnet_after_one_write("memory.store_index=ivf").store  # 0: 4 sqrt(4096) = 256 lists, at most 4096 // 39
    assert (auto._ann[0].lists, auto._ann[0].probes) == (105, 8)


def test_hnsw_settings_reach_the_faiss_graph():
    store = memnet_after_one_write("memory.store_index=hnsw", "memory.store_hnsw_neighbors=6",
                                   "memory.store_hnsw_ef_search=40", "memory.store_hnsw_min_entries=5").store
    graph = store._ann[0]
    assert (graph.neighbors, graph.ef_search, graph.min_entries) == (6, 40, 5)
    assert graph.ready and graph.index.hnsw.nb_neighbors(1) == 6  # 8 entries >= 5: the graph took over, with M = 6
    default = memnet_after_one_write("memory.store_index=hnsw").store._ann[0]
    assert not default.ready and default.index.hnsw.nb_neighbors(1) == 32  # 8 of the 1,024 entries it waits for


def test_probing_every_ivf_list_finds_what_exact_search_finds_and_one_list_does_not():
    """Behaviour, not only attributes: the probes setting is what the search uses."""
    keys = RNG.standard_normal((800, 16)).astype(np.float32)
    queries = RNG.standard_normal((1, 40, 16)).astype(np.float32)
    exact = FaissStore(16, 1, capacity=800)
    exact.add(keys, np.zeros((800, 1)), np.zeros(800, dtype=np.int64))
    found = {}
    for probes in (1, 16):
        cfg = MemoryConfig(dim=16, store_capacity=800, store_index="ivf", store_ivf_lists=16, store_ivf_probes=probes)
        store = FaissStore.from_config(cfg, lanes=1, value_dim=1)
        store.add(keys, np.zeros((800, 1)), np.zeros(800, dtype=np.int64))
        assert store._ann[0].ready
        found[probes] = store.search(queries, 5).ids
    truth = exact.search(queries, 5).ids
    np.testing.assert_array_equal(found[16], truth)
    assert (found[1] == truth).mean() < 0.9  # one list of 16 misses neighbours in other lists


def test_an_ivf_index_read_into_a_store_made_with_other_lists_keeps_its_own():
    small = FaissStore(8, 1, capacity=400, index="ivf", ivf_lists=4)
    small.add(RNG.standard_normal((200, 8)), np.zeros((200, 1)), np.zeros(200, dtype=np.int64))
    other = FaissStore(8, 1, capacity=400, index="ivf", ivf_lists=8)
    other.load_state_dict(small.state_dict())
    assert (other._ann[0].lists, other._ann[0].min_entries) == (4, 4 * 39)
    q = RNG.standard_normal((1, 10, 8)).astype(np.float32)
    np.testing.assert_array_equal(other.search(q, 4).ids, small.search(q, 4).ids)


@pytest.mark.parametrize("override, message", [
    ("memory.store_ivf_lists=105", None),  # 4096 // 39: the most a partition can train
    ("memory.store_ivf_lists=106", "memory.store_ivf_lists=106: at most store_capacity // 39 = 105"),
    ("memory.store_ivf_probes=105", None),  # the automatic lists: 4 sqrt(4096) = 256, at most 105
    ("memory.store_ivf_probes=106", "memory.store_ivf_probes=106: at most the 105 IVF lists a partition has"),
    ("memory.store_ivf_lists=-1", "memory.store_ivf_lists=-1: must be >= 0 (0 = automatic)"),
    ("memory.store_hnsw_neighbors=1", "memory.store_hnsw_neighbors=1: must be in [2, 2147483647]"),
    ("memory.store_hnsw_ef_search=0", "memory.store_hnsw_ef_search=0: must be in [1, 2147483647]"),
    ("memory.store_hnsw_min_entries=0", "memory.store_hnsw_min_entries=0: must be >= 1"),
])
def test_ann_settings_are_checked_with_one_line(override, message):
    overrides = ["memory.store_index=ivf", override]
    if message is None:
        load_config(overrides)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(overrides)



@pytest.mark.parametrize("inert, why", [
    (["memory.store=false", "memory.store_index=ivf"], "memory.store=false"),  # was refused: "at most ... = 105"
    (["memory.store_index=flat"], "memory.store_index=flat"),
    (["memory.store_index=hnsw"], "memory.store_index=hnsw"),
])
@pytest.mark.parametrize("key", ["memory.store_ivf_lists", "memory.store_ivf_probes"])
def test_the_ivf_bounds_bite_only_where_the_ivf_index_is_built(inert, why, key):
    """An IVF setting past the store's size is inert without an IVF index, with memory.store=false as with another
    index: accepted, and the note says it changes nothing (as for every other inert key)."""
    from agents.inert_notes import inert_note

    cfg = load_config([*inert, f"{key}=5000"])
    assert f"{key} changes nothing with {why}" in inert_note(cfg, [key])
    with pytest.raises(ConfigError, match=rf"^{key}=5000: at most "):  # built: refused as before
        load_config(["memory.store_index=ivf", f"{key}=5000"])
    with pytest.raises(ConfigError, match=rf"^{key}=-1: must be >= 0"):  # impossible anywhere: refused
        load_config([*inert, f"{key}=-1"])

@settings(max_examples=examples(40), deadline=None)
@given(capacity=st.integers(1, 20_000), lists=st.integers(0, 600), probes=st.integers(0, 600),
       index=st.sampled_from(["flat", "ivf", "hnsw"]))
def test_an_accepted_ivf_config_is_what_the_index_uses(capacity, lists, probes, index):
    """The config refuses exactly what the IVF index could not use as given, and what it accepts the index uses
    as given (0: automatic); no silent clamping."""
    most = max(1, capacity // 39)
    effective = lists or max(1, min(int(4 * capacity ** 0.5), capacity // 39))
    refused = index == "ivf" and (lists > most or probes > effective)
    try:
        cfg = MemoryConfig(dim=4, store_capacity=capacity, store_top_k=1, store_index=index, store_ivf_lists=lists,
                           store_ivf_probes=probes)
    except ValueError:
        assert refused
        return
    assert not refused
    if index == "ivf":
        made = FaissStore.from_config(cfg, lanes=1, value_dim=1)._ann[0]
        assert lists == 0 or made.lists == lists
        assert probes == 0 or made.probes == probes


def test_checkpoints_from_before_the_ann_keys_resume_and_their_settings_are_checked():
    now = {"agent": {"name": "memnet"}, "model": {"dim": 32},
           "memory": MemoryConfig(dim=32, context_decay=0.95).to_dict()}
    before = {**now, "memory": {k: v for k, v in now["memory"].items() if "ivf" not in k
                                               and "hnsw" not in k and "halflife" not in k}}
    check_compatible(before, now, "x.pt")  # absent keys added since held the store's settings of then
    older = {**now, "memory": {k: v for k, v in before["memory"].items() if k != "context_restart"}}
    with pytest.raises(CheckpointError, match="memory.context_restart: None vs True"):  # a key not added since:
        check_compatible(older, now, "x.pt")  # its absence is another architecture, not a default
    searched = {**now, "memory": {**now["memory"], "store_ivf_probes": 9, "store_hnsw_ef_search": 100}}
    check_compatible(now, searched, "x.pt")  # search-time settings may change on resume
    with pytest.raises(CheckpointError, match="memory.store_ivf_lists: 0 vs 16"):
        check_compatible(before, {**now, "memory": {**now["memory"], "store_ivf_lists": 16}}, "x.pt")
    with pytest.raises(CheckpointError, match="memory.store_hnsw_neighbors: 32 vs 8"):
        check_compatible(now, {**now, "memory": {**now["memory"], "store_hnsw_neighbors": 8}}, "x.pt")


def test_an_ivf_run_with_its_settings_runs_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = tiny("ContinualShift-v0", "memnet", run_dir, "memory.store_index=ivf", "memory.store_ivf_lists=1",
                "memory.store_ivf_probes=1")
    assert run.main(args) == 0
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["memory"]["store_ivf_lists"] == 1
    assert saved["memory"]["store"]["config"]["ivf_lists"] == 1
    assert run.main([f"resume={run_dir}"]) == 0


@pytest.mark.parametrize("kw, message", [
    ({"ivf_lists": 16}, "ivf_lists=16: at most capacity // 39 = 15"),
    ({"ivf_lists": 8, "ivf_probes": 9}, "ivf_probes=9: at most the 8 lists"),
])
def test_the_python_api_refuses_ivf_settings_it_cannot_use_as_given(kw, message):
    FaissStore(8, 1, capacity=600, index="ivf", ivf_lists=15, ivf_probes=15)  # the bounds themselves are fine
    with pytest.raises(ValueError, match=message):
        FaissStore(8, 1, capacity=600, index="ivf", **kw)


def test_a_store_saved_with_ivf_settings_the_old_code_clamped_still_loads(tmp_path):
    """Before the store refused them, ivf_lists=64 at capacity 256 was saved as asked and used as 6 lists."""
    store = FaissStore(8, 1, capacity=256, index="ivf", ivf_lists=6, ivf_probes=6)
    store.add(RNG.standard_normal((250, 8)), np.zeros((250, 1)), np.zeros(250, dtype=np.int64))
    store.save(tmp_path / "s")
    saved = torch.load(tmp_path / "s" / "store.pt", weights_only=True)
    saved["config"] |= {"ivf_lists": 64, "ivf_probes": 80}  # what the old code wrote
    torch.save(saved, tmp_path / "s" / "store.pt")
    loaded = FaissStore.load(tmp_path / "s")
    assert (loaded._ann[0].lists, loaded._ann[0].probes) == (6, 6)
    q = RNG.standard_normal((1, 10, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.search(q, 4).ids, store.search(q, 4).ids)


def test_damaged_or_mixed_store_folders_are_one_clear_line(tmp_path):
    """Found by adversarial testing: a store.pt from another save named an index file 'no file at ...', a store.pt
    without settings raised KeyError, a hand-edited entry count loaded silently (len 1998 in a 32-row store)."""
    store = FaissStore(8, 1, capacity=32)
    store.add(RNG.standard_normal((5, 8)), np.zeros((5, 1)), np.zeros(5, dtype=np.int64))
    store.save(tmp_path / "a")
    store.save(tmp_path / "b")
    (tmp_path / "a" / "store.pt").write_bytes((tmp_path / "b" / "store.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"store.pt names index file index-\w+.pt, which is not in the folder"):
        FaissStore.load(tmp_path / "a")
    for edit, message in ((lambda d: d.pop("config"), r"store.pt lacks its settings \('config'\)"),
                          (lambda d: d["count"].fill_(999), "the saved entry counts do not match its rows"),
                          (lambda d: d.pop("clock"), "the saved state lacks clock")):
        saved = torch.load(tmp_path / "b" / "store.pt", weights_only=True)
        edit(saved)
        torch.save(saved, tmp_path / "c.pt")
        (tmp_path / "c").mkdir(exist_ok=True)
        for f in (tmp_path / "b").iterdir():
            (tmp_path / "c" / f.name).write_bytes(f.read_bytes())
        (tmp_path / "c" / "store.pt").write_bytes((tmp_path / "c.pt").read_bytes())
        with pytest.raises(ValueError, match=message):
            FaissStore.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="no file at .*; point FaissStore.load at the folder that FaissStore"):
        FaissStore.load(tmp_path / "nowhere")


@pytest.mark.parametrize("agent, context_decay, loads", [
    ("transformer", 0.95, True), ("memnet", 0.0, True), ("memnet", 0.95, False)])
def test_checkpoints_from_before_the_context_keys_load_where_those_keys_act_not(agent, context_decay, loads):
    """context_fixed / context_scale / context_restart act only in MemNet's store with a context block; a run saved
    before they existed without one (a memory-free or context-free run) changes nothing under them."""
    now = {"agent": {"name": agent}, "model": {"dim": 32},
           "memory": MemoryConfig(dim=32, context_decay=context_decay).to_dict()}
    keep = {k: v for k, v in now["memory"].items()
            if k not in ("context_fixed", "context_scale", "context_restart", "store_importance_halflife")
            and "ivf" not in k and "hnsw" not in k}
    if agent == "transformer":
        keep["store"] = False
    old = {**now, "memory": keep}
    if loads:
        check_compatible(old, {**now, "memory": {**now["memory"], "store": keep.get("store", True)}}, "x.pt")
    else:
        with pytest.raises(CheckpointError, match="memory.context_fixed: None vs True"):
            check_compatible(old, now, "x.pt")
