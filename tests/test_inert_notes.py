"""Memory keys that change nothing under another setting (`memory.config.inert_keys`): the table on real configs, a
MemNet whose flagged key is changed computing exactly the same, and the one `note:` line of agents.run and
agents.evaluate (the run goes on)."""

import contextlib
import io

import pytest
import torch

from agents import evaluate, run
from agents.config import load_config, memory_config
from agents.inert_notes import inert_note
from agents.memnet import MemNet
from agents.models import ModelConfig
from memory.config import INERT_WHEN, MemoryConfig, inert_keys
from tests.test_run import tiny

V, D, B, T, CALLS = 23, 16, 2, 8, 10  # 10 calls of 8 writes per lane: past BASE's 64 entries (evictions), and IVF
# (1 list: from 39 entries) and HNSW (from 16) take over from exact search at the 5th and 2nd call

# another valid value for each key
ALT = {"read_heads": 2, "top_k": 2, "bottleneck": 4, "decay": False, "util_weight": 0.5, "pressure_weight": 0.5,
       "sparsity_weight": 0.5, "internal_slots": 3, "store_capacity": 48, "store_scope": "shared",
       "store_index": "hnsw", "store_eviction": "lru", "store_importance_halflife": 2.0, "store_top_k": 2,
       "store_metric": "cosine", "store_replace": 0.5, "store_threads": 2, "store_ivf_lists": 3,
       "store_ivf_probes": 2, "store_hnsw_neighbors": 4, "store_hnsw_ef_search": 2, "store_hnsw_min_entries": 20,
       "store_precision": "bf16", "copy": 0.0, "recency": False, "key_lags": "1:0+2:1", "key_source": "token",
       "context_decay": 0.5, "context_fixed": False, "context_scale": 1.0, "context_restart": False, "attn_heads": 2,
       "cache_hot": 4, "cache_warm": 0, "cache_cold": 8, "cache_policy": "fifo", "cache_quantize": False,
       "fusion": "concat"}
BASE = dict(dim=D, slots=4, read_heads=4, top_k=4, bottleneck=8, store_capacity=64, store_top_k=4,
            store_metric="ip", store_hnsw_min_entries=16, copy=0.5, cache_hot=8, cache_warm=16, cache_cold=64)
# settings under which rows of INERT_WHEN apply
SETTINGS = [{}, dict(slots=0), dict(store=False), dict(store_index="ivf"), dict(store_index="hnsw"),
            dict(store_index="hnsw", store_hnsw_min_entries=100),  # above BASE's capacity: the graph never comes
            dict(store_eviction="lru"), dict(store=False, slots=0, fusion="cross_attention"),
            dict(store=False, slots=0), dict(cache_warm=0)]


def cases() -> dict[str, tuple[dict, list[str]]]:
    """Each setting a reason names ("memory.store_index=flat") -> the first of SETTINGS it holds under, and the keys
    it makes inert there."""
    found = {}
    for setting in SETTINGS:
        mem = MemoryConfig(**{**BASE, **setting})
        for key in ALT:
            for why in inert_keys(mem, [f"memory.{key}"]):
                if " changes nothing with " not in why:  # store_index=hnsw "builds no graph": a note, not inert
                    continue
                first, keys = found.setdefault(why.split(" changes nothing with ")[1], (setting, []))
                keys += [key] if first is setting else []
    return found


CASES = cases()


def test_every_key_of_the_table_is_exercised():
    assert {key for _, keys in CASES.values() for key in keys} == {key for keys, _ in INERT_WHEN for key in keys}


def outputs(mem: MemoryConfig) -> list:
    """Everything a small MemNet computes from one seed: its initial weights, each call's logits and regularisers,
    the gradients, and what the optimiser is told (no weight decay on, learns without targets)."""
    torch.manual_seed(0)
    model = MemNet(ModelConfig(vocab_size=V, dim=D, layers=1, heads=2, window=4, memory=mem))
    out = [sorted(model.no_weight_decay()), model.learns_without_targets(), dict(model.state_dict())]
    tokens = torch.randint(V, (CALLS, B, T), generator=torch.Generator().manual_seed(1))
    tokens[::3, :, 0] = 0  # a BOS now and then (context_restart)
    state = model.initial_state(B)
    for call in tokens:
        logits, state, aux = model(call, state, writes=torch.ones_like(call, dtype=torch.bool))
        (logits.sum() + sum(aux["losses"].values(), logits.new_zeros(()))).backward()
        out += [logits.detach(), {k: v.detach() for k, v in aux["losses"].items()}]
        state = {k: v.detach() for k, v in state.items()}  # (as the trainer: no gradient across calls)
    model.close()
    return out + [{n: p.grad for n, p in model.named_parameters()}]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.mark.parametrize("setting,keys", CASES.values(), ids=list(CASES))
def test_keys_said_to_change_nothing_change_nothing(setting, keys):
    """All the keys one setting makes inert, changed at once: the same weights, logits, losses and gradients."""
    mem, changed = MemoryConfig(**{**BASE, **setting}), MemoryConfig(**{**BASE, **setting, **{k: ALT[k] for k in keys}})
    assert all(getattr(mem, k) != getattr(changed, k) for k in keys)
    assert len(inert_keys(changed, [f"memory.{k}" for k in keys])) == len(keys)
    assert same(outputs(mem), outputs(changed))


def test_a_key_that_acts_changes_the_outputs():  # the comparison above can tell
    mem = MemoryConfig(**{**BASE, "context_decay": 0.5})
    assert not inert_keys(mem, ["memory.context_scale"])
    assert not same(outputs(mem), outputs(MemoryConfig(**{**BASE, "context_decay": 0.5, "context_scale": 1.0})))


@pytest.mark.parametrize("overrides,keys,reasons", [
    ([], ["memory.store_ivf_probes", "memory.store_hnsw_ef_search", "memory.store_top_k", "train.lr",
          "memory.internal_slots", "memory.context_fixed"],  # ContinualShift: context_decay=0.95
     ["memory.store_ivf_probes changes nothing with memory.store_index=flat",
      "memory.store_hnsw_ef_search changes nothing with memory.store_index=flat",
      "memory.internal_slots changes nothing with memory.internal=none"]),
    (["memory.store_index=ivf"], ["memory.store_ivf_probes", "memory.store_ivf_lists", "memory.store_threads",
                                  "memory.store_hnsw_neighbors", "memory.store_precision"],
     ["memory.store_hnsw_neighbors changes nothing with memory.store_index=ivf",
      "memory.store_precision changes nothing with memory.store_index=ivf"]),
    (["memory.store_index=hnsw", "memory.store_eviction=lru"],
     ["memory.store_hnsw_min_entries", "memory.store_ivf_lists", "memory.store_importance_halflife"],
     ["memory.store_ivf_lists changes nothing with memory.store_index=hnsw",
      "memory.store_importance_halflife changes nothing with memory.store_eviction=lru"]),
    # a store too small for the graph (the default store_hnsw_min_entries is 1024): hnsw was exact search, unsaid
    (["memory.store_index=hnsw", "memory.store_capacity=512"],
     ["memory.store_index", "memory.store_hnsw_ef_search", "memory.store_capacity", "memory.store_hnsw_neighbors"],
     ["memory.store_index=hnsw builds no graph with memory.store_hnsw_min_entries=1024 above memory.store_capacity=512 "
      "(a store partition never holds enough for the graph: exact search)",
      "memory.store_hnsw_ef_search changes nothing with memory.store_hnsw_min_entries=1024 above "
      "memory.store_capacity=512 (a store partition never holds enough for the graph: exact search)",
      "memory.store_hnsw_neighbors changes nothing with memory.store_hnsw_min_entries=1024 above "
      "memory.store_capacity=512 (a store partition never holds enough for the graph: exact search)"]),
    (["memory.store=false"], ["memory.store_ivf_probes", "memory.copy", "memory.cache_hot", "memory.context_scale",
                              "memory.slots", "memory.attn_heads"],  # the slot bank still fuses with gated
     ["memory.store_ivf_probes changes nothing with memory.store=false", "memory.copy changes nothing with "
      "memory.store=false", "memory.cache_hot changes nothing with memory.store=false",
      "memory.context_scale changes nothing with memory.store=false",
      "memory.attn_heads changes nothing with memory.store=false, memory.internal=none and memory.fusion=gated"]),
    (["memory.slots=0", "memory.internal=lm2"],
     ["memory.read_heads", "memory.top_k", "memory.util_weight", "memory.fusion", "memory.internal_slots"],
     ["memory.read_heads changes nothing with memory.slots=0", "memory.top_k changes nothing with memory.slots=0",
      "memory.util_weight changes nothing with memory.slots=0"]),
    (["env=LongDependency-v0", "memory.store_eviction=importance"],
     ["memory.context_fixed", "memory.context_restart", "memory.store_importance_halflife"],
     ["memory.context_fixed changes nothing with memory.context_decay=0",
      "memory.context_restart changes nothing with memory.context_decay=0"]),
])
def test_inert_keys_on_run_configs(overrides, keys, reasons):
    assert inert_keys(memory_config(load_config(overrides)), keys) == reasons


def test_a_baseline_is_told_its_memory_keys_change_nothing_but_reset():  # reset clears its hidden state / window
    assert inert_note(load_config(["agent=gru"]), ["memory.store_ivf_probes", "memory.reset", "seed"]) == \
        "note: agent=gru has no memory; memory.store_ivf_probes changes nothing"
    assert inert_note(load_config(["agent=transformer"]), ["memory.reset", "train.lanes"]) is None
    assert inert_note(load_config([]), ["memory.store_ivf_probes", "memory.slots"]) == \
        "note: memory.store_ivf_probes changes nothing with memory.store_index=flat"


def env_of(cfg):
    """The run's env with one lane (what agents.run and agents.evaluate give inert_note: the trainer's)."""
    from agents.episodes import make_vector_env

    return make_vector_env(cfg.env.id, 1, dict(cfg.env.kwargs))


def test_reset_by_task_on_an_env_with_one_task_is_a_note():  # there it never cleared, and nothing said so
    line = "memory.reset=task clears nothing: LongDependency-v0 has one task here (as memory.reset=never)"
    for agent in ("memnet", "gru"):
        cfg = load_config(["env=LongDependency-v0", f"agent={agent}", "memory.reset=task"])
        assert inert_note(cfg, ["memory.reset"], env=env_of(cfg)) == f"note: {line}"
    cfg = load_config(["env=LongDependency-v0", "memory.reset=task", "memory.slots=0"])
    assert inert_note(cfg, ["memory.top_k"], env=env_of(cfg)) == \
        f"note: memory.top_k changes nothing with memory.slots=0; {line}"
    cfg = load_config(["memory.reset=task"])  # ContinualShift: 5 tasks
    assert inert_note(cfg, ["memory.reset"], env=env_of(cfg)) is None
    cfg = load_config(["env=LongDependency-v0", "memory.reset=episode"])
    assert inert_note(cfg, [], env=env_of(cfg)) is None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny MemNet runs and what agents.run printed: a flat store given two keys it does not read and one it
    reads (ContinualShift's context_decay is 0.95), and an IVF store given only keys it reads."""
    root, out = tmp_path_factory.mktemp("inert"), {}
    given = {"flat": ["memory.store_ivf_probes=5", "memory.context_scale=2.0", "memory.store_importance_halflife=4"],
             "ivf": ["memory.store_index=ivf", "memory.store_capacity=390", "memory.store_ivf_probes=5"]}
    for name, extra in given.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):  # (capsys is per test)
            assert run.main(tiny("ContinualShift-v0", "memnet", root / name, "train.episodes=1", *extra)) == 0
        out[name] = (root / name, buffer.getvalue())
    return out


def test_run_notes_the_keys_that_change_nothing_and_goes_on(runs):
    run_dir, out = runs["flat"]
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == ["note: memory.store_ivf_probes changes nothing with memory.store_index=flat; "
                     "memory.store_importance_halflife changes nothing with memory.store_eviction=fifo"]
    assert (run_dir / "metrics.json").is_file() and "run folder:" in out


def test_run_with_keys_that_act_has_no_note(runs):
    run_dir, out = runs["ivf"]
    assert "note:" not in out and (run_dir / "metrics.json").is_file()


def test_evaluate_notes_an_inert_key_once_per_sweep(runs, capsys):
    run_dir = runs["flat"][0]
    assert evaluate.main([f"checkpoint={run_dir}", "memory.store_hnsw_ef_search=5,6", "out=sweep.json"]) == 0
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and out.startswith(
        "note: memory.store_hnsw_ef_search changes nothing with memory.store_index=flat\n")
    assert out.count("mean:") == 2  # both evaluations ran


def test_evaluate_notes_a_key_inert_in_a_later_evaluation_of_a_sweep(runs, capsys):
    """Only the first evaluation's notes were printed: with shift=gradual first, the abrupt evaluation's unread
    shift_window went unsaid (shift=abrupt,gradual said it)."""
    run_dir = runs["flat"][0]
    for shifts in ("gradual,abrupt", "abrupt,gradual"):
        assert evaluate.main([f"checkpoint={run_dir}", f"env.kwargs.shift={shifts}", "env.kwargs.shift_window=1",
                              "out=shifts.json"]) == 0
        notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
        notes = [line for line in notes if "replays the run's" not in line]  # (gradual's schedule: its own note)
        assert notes == ["note: env.kwargs.shift_window changes nothing with shift=abrupt (it is how long a gradual "
                         "shift blends)"], (shifts, notes)


@pytest.mark.parametrize("run_name,arg", [("ivf", "memory.store_ivf_probes=3"), ("flat", "memory.reset=episode")])
def test_evaluate_with_a_key_that_acts_has_no_note(runs, capsys, run_name, arg):
    assert evaluate.main([f"checkpoint={runs[run_name][0]}", arg, "out=acts.json"]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "mean:" in out


@pytest.mark.parametrize("overrides, key", [
    (["memory.store_top_k=5000"], "memory.store_top_k"),  # past store_capacity=4096
    (["memory.cache_hot=0", "memory.cache_warm=0", "memory.cache_cold=0"], "memory.cache_hot"),
])
def test_bounds_between_store_keys_bite_only_where_the_store_is_built(overrides, key):
    """store_top_k <= store_capacity and a cache of >= 1 entry, as the IVF bounds: memory.store=false and the
    baselines, which build no store, take them with the note; MemNet with its store refuses them as before."""
    for off in (["memory.store=false"], ["agent=lstm"]):
        cfg = load_config([*off, *overrides])
        assert f"{key} changes nothing" in inert_note(cfg, [key])
    with pytest.raises(ValueError, match="store_top_k=5000: must be in|total capacity must be >= 1"):
        load_config(overrides)
    with pytest.raises(ValueError, match="store_top_k=0: must be in"):  # impossible anywhere: refused
        load_config(["memory.store=false", "memory.store_top_k=0"])


def trained_weights(tmp_path, agent: str, *extra: str) -> list[torch.Tensor]:
    """The weights after one tiny LongDependency training episode with `extra` overrides."""
    from agents.trainer import Trainer

    run_dir = tmp_path / str(len(list(tmp_path.iterdir())))  # a new folder for each
    trainer = Trainer(load_config(tiny("LongDependency-v0", agent, run_dir, *extra)), run_dir)
    trainer.train_episode()
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("agent", ["memnet", "gru"])
def test_reinforce_settings_change_nothing_in_supervised_training_and_are_noted(agent, tmp_path):
    settings = [("train.entropy_coef=0.0", "train.baseline_decay=0.5"), ("train.entropy_coef=0.3",
                                                                         "train.baseline_decay=0.9")]
    same, other = (trained_weights(tmp_path, agent, *s) for s in settings)
    assert all(torch.equal(a, b) for a, b in zip(same, other, strict=True))
    acting, changed = (trained_weights(tmp_path, agent, "train.mode=reinforce", *s) for s in settings)
    assert not all(torch.equal(a, b) for a, b in zip(acting, changed, strict=True))  # where they act, they do
    keys = ["train.entropy_coef", "train.baseline_decay", "train.lr"]
    assert inert_note(load_config([f"agent={agent}"]), keys) == ("note: train.entropy_coef, train.baseline_decay "
                                                                 "change nothing with train.mode=supervised "
                                                                 "(REINFORCE's settings)")
    assert inert_note(load_config([f"agent={agent}", "train.mode=reinforce"]), keys) is None


@pytest.mark.parametrize("agent", ["memnet", "lstm"])
def test_dropout_changes_nothing_under_reinforce_with_step_acting_and_is_noted(agent, tmp_path):
    """Step acting draws REINFORCE's actions without dropout and learns them so (`learn_played`): model.dropout is
    inert there, as the README's train.acting row says, and the note says so (it said nothing)."""
    step = ("train.mode=reinforce", "train.acting=step", "model.layers=2")
    same, other = (trained_weights(tmp_path, agent, *step, f"model.dropout={d}") for d in (0.0, 0.3))
    assert all(torch.equal(a, b) for a, b in zip(same, other, strict=True))
    chunk = ("train.mode=reinforce", "train.acting=chunk", "model.layers=2")
    acting, changed = (trained_weights(tmp_path, agent, *chunk, f"model.dropout={d}") for d in (0.0, 0.3))
    assert not all(torch.equal(a, b) for a, b in zip(acting, changed, strict=True))  # where it acts, it does
    keys = ["model.dropout", "train.lr"]
    assert inert_note(load_config([f"agent={agent}", *step]), keys) == (
        "note: model.dropout changes nothing with train.mode=reinforce and train.acting=step (step acting acts and "
        "learns without dropout)")
    for acting in ("auto", "chunk"):  # auto is chunk acting under reinforce on memstream's envs
        assert inert_note(load_config([f"agent={agent}", "train.mode=reinforce", f"train.acting={acting}",
                                       "model.layers=2"]), keys) is None
    assert inert_note(load_config([f"agent={agent}", "train.acting=step", "model.layers=2"]), keys) is None


@pytest.mark.parametrize("swept", ["sweep.search_space.train.mode=grid:[supervised,reinforce]",
                                   "sweep.search_space.train.acting=grid:[step,auto]"])
def test_a_swept_mode_or_acting_decides_whether_dropout_acts(tmp_path, capsys, swept):
    """model.dropout is inert under REINFORCE with step acting only: a sweep of train.mode or train.acting has
    trials where it acts, and the sweep's note called it inert ("the trials differ only in train.mode")."""
    from agents.tune_prepare import prepare

    reinforce_step = ("sweep.env_overrides.ContinualShift=[env.kwargs.num_tasks=2,env.kwargs.episodes_per_task=2,"
                      "train.mode=reinforce,train.acting=step]")
    prepare(["env=ContinualShift-v0", "sweep=smoke", reinforce_step, "sweep.search_space.model.dropout=grid:[0.0,0.3]",
             swept, f"runs_root={tmp_path}"])
    err = capsys.readouterr().err
    assert "model.dropout changes nothing" not in err, err


def test_a_key_inert_for_two_reasons_is_named_once():
    """The LSTM's one layer and REINFORCE's step acting both leave model.dropout inert: the note said it twice."""
    cfg = load_config(["env=ContinualShift-v0", "agent=lstm", "model.layers=1", "train.mode=reinforce",
                       "train.acting=step", "model.dropout=0.2"])
    assert inert_note(cfg, ["model.dropout"]).count("model.dropout changes nothing") == 1
