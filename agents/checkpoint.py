"""One checkpoint dict per run (nanoGPT style), written atomically and read back with `weights_only=True`.

Layout of `checkpoints/last.pt`:
    format      "memstream-checkpoint"      version  CHECKPOINT_VERSION
    config      the run's resolved config (plain dict)
    model       model.state_dict()          optimizer  optimizer.state_dict()
    state       the recurrent per-lane state (controller window cache, slot bank, internal memory): tensors
    memory      model.memory_state_dict(): FAISS store (its live entries: keys, values, metadata) + K/V cache tiers
                (with token-code addresses, the cold tier without the keys that are codes: agents/memnet_cache_codes.py)
    trainer     counters, accuracy matrix, curves, accumulators, the env reset log (plain python types)
    rng         torch RNG state
    env_files   sha256 of each env file option's content ({"haystack_path": {"path", "sha256"}}; absent: none, or a
                checkpoint from before it was kept): a restore refuses a file that changed (checkpoint_fields)
Only tensors and plain python types go in, so `torch.load(weights_only=True)` can read
it (no pickled code runs on load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agents.checkpoint_paths import (  # noqa: F401  (CheckpointError, paths: re-exported)
    KEY_OF,
    CheckpointError,
    check_purpose,
    checkpoint_file,
    existing_checkpoint,
    resolved,
    run_dir_of,
    shell_arg,
    unreadable_checkpoint,
)
from memory.config import MEMORY_RUNTIME_KEYS  # noqa: F401  (re-exported)
from memory.persist import ZIP_MAGIC, atomic_torch_save, unreadable, zip_damage

FORMAT = "memstream-checkpoint"
# 2: MemNet's store keys are lag-pair key inputs (no store_key_in; window.recent state; cache format /2), so a
# version-1 MemNet checkpoint no longer fits even under an identical config
CHECKPOINT_VERSION = 2
ARCH_SECTIONS = ("model", "memory")  # config sections that must match for weights to fit
ARCH_KEYS = ("agent",)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
    try:
        atomic_torch_save({"format": FORMAT, "version": CHECKPOINT_VERSION, **payload}, path)
    except OSError as exc:  # a full disk mid-run: one line; resume= continues from the checkpoint kept
        raise CheckpointError(f"checkpoint: {exc}; then {how_to_continue(run_dir_of(Path(path).parent))}") from None


def how_to_continue(run_dir: Path) -> str:
    """What to do once a write into a run folder failed (a full disk): resume= from its last checkpoint, which the
    failed write kept (written atomically), or start again where none was written yet."""
    if (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        return f"continue with {shell_arg('resume', run_dir)}"
    return "start the run again (no checkpoint was written before)"


_UNREADABLE = {"resume": "resume from another run or start afresh",  # damaged, incomplete
               "evaluate": "evaluate another run's checkpoint, or re-run the experiment"}
_OTHER_VERSION = {"resume": "re-run the experiment", "evaluate": "re-run the experiment, then evaluate the new run"}


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def load_checkpoint(path: str | Path, purpose: str = "resume") -> dict[str, Any]:
    """Read a checkpoint; any failure becomes one CheckpointError line naming the file, the problem and the fix
    that `purpose` has: "resume" (agents.run's resume=) or "evaluate" (agents.evaluate's checkpoint=)."""
    path = existing_checkpoint(path, purpose)
    key = KEY_OF[purpose]
    if (why := unreadable(path)) is not None:  # whole, only out of reach: it was called damaged
        raise unreadable_checkpoint(path, why)
    if not _starts_with(path, ZIP_MAGIC):
        if path.suffix != ".pt":  # config.yaml, metrics.json, ...: a slip
            raise CheckpointError(f"{str(path)!r} is not a checkpoint file; point {key} at a run folder or its "
                                  "checkpoints/last.pt")
        # a .pt of other bytes (torch.load's reason was a bare "KeyError" or "EOFError")
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a memstream checkpoint (not the zip "
                              f"archive torch.save writes); {_UNREADABLE[purpose]}")
    bad = zip_damage(path)
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged ({bad}); {_UNREADABLE[purpose]}")
    try:
        body = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects outside the allow-list, ...
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a memstream checkpoint "
                              f"({type(exc).__name__}); {_UNREADABLE[purpose]}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a memstream checkpoint (no '{FORMAT}' marker); point {key} at "
                              "a memstream run folder (one that has checkpoints/last.pt)")
    if body.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {body.get('version')}, this memstream "
                              f"reads version {CHECKPOINT_VERSION}; {_OTHER_VERSION[purpose]}")
    missing = [k for k in ("config", "model", "optimizer", "state", "memory", "trainer", "rng") if k not in body]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete (missing {', '.join(missing)}); "
                              f"{_UNREADABLE[purpose]}")
    return body


def check_compatible(saved_config: dict, config: dict, path: str | Path, purpose: str | None = None) -> None:
    """Fail with one line if the checkpoint was written by another architecture than `config` builds.

    `purpose` None: `config` is the caller's own (Trainer.restore), so the fix is the run's config.yaml. "resume" /
    "evaluate": `config` is the checkpoint's saved config as this memstream reads it (agents.run's resume=,
    agents.evaluate), so a difference means another memstream version wrote it, and the fix is that version or a
    new run."""
    if purpose is not None:
        check_purpose(purpose)
    diffs = []
    for key in ARCH_KEYS:
        if saved_config.get(key) != config.get(key):
            diffs.append(f"{key}: {saved_config.get(key)} vs {config.get(key)}")
    for section in ARCH_SECTIONS:
        a, b = saved_config.get(section, {}), config.get(section, {})
        if section == "memory":  # keys added since version 2 of the format: absent, they held the value below
            a, b = {**MEMORY_KEYS_ADDED, **a}, {**MEMORY_KEYS_ADDED, **b}
            if (not a.get("context_decay") or not a.get("store", True)
                    or (saved_config.get("agent") or {}).get("name") != "memnet"):
                # the context keys (added within version 2) act only with a context block: absent, they changed
                # nothing, so any value fits (a memory-free or context-free run saved before them still loads)
                a = {**{k: b.get(k) for k in CONTEXT_KEYS}, **a}
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k) and not (section == "memory" and k in MEMORY_RUNTIME_KEYS):
                diffs.append(f"{section}.{k}: {a.get(k)} vs {b.get(k)}")
    if saved_config.get("env", {}).get("id") != config.get("env", {}).get("id"):
        diffs.append(f"env.id: {saved_config.get('env', {}).get('id')} vs {config.get('env', {}).get('id')}")
    if not diffs:
        return
    if purpose is None:
        fix = "use the run's own config.yaml"
    else:
        fix = f"this memstream reads its saved config as another model (another memstream version wrote it): " \
              f"{_with_that_version(path, purpose)}"
    raise CheckpointError(f"checkpoint {str(path)!r} was written by another architecture ({'; '.join(diffs[:4])}); "
                          f"{fix}")


RUN_SECTIONS = ("env", "agent", "model", "memory", "train", "seed")  # what a run is (not where it writes)
# what a resumed run may change: how it runs (threads: the last bits of its floats too, so a note says so; device: a
# run trained with device=cuda continues on a machine without CUDA, its numbers then differing in the last bits)
RESUME_KEYS = ("train.progress", "train.threads", "device")


def folder_config(run_dir: Path) -> dict | None:
    """A run folder's config.yaml as a mapping, or None where it is absent, damaged, unresolvable or no mapping (a
    YAML scalar or list)."""
    from omegaconf import OmegaConf

    try:
        folder = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"), resolve=True)
    except Exception:
        return None
    return folder if isinstance(folder, dict) else None


def check_own_run(saved_config: dict, run_dir: Path, path: str | Path, purpose: str) -> None:
    """A checkpoint in a run folder is that run's: its config must agree with the folder's config.yaml. Another
    run's last.pt copied in was resumed as if it were this run, and its config.yaml, metrics.json and plots then
    replaced this run's. Keys only one side has (added by a later memstream) and `RESUME_KEYS` are not compared;
    a folder without a readable config.yaml has nothing to compare."""
    folder = folder_config(run_dir)
    if folder is None:  # absent, damaged or unresolvable: the checkpoint's config is all there is (it is rewritten)
        return
    differ = config_difference(saved_config, folder)
    if differ is not None:
        k, ours, theirs = differ
        raise CheckpointError(f"checkpoint {str(path)!r} is not this run folder's: it has {k}={ours!r}, the "
                              f"folder's config.yaml {k}={theirs!r} (another run's checkpoint, or an edited one); "
                              f"{KEY_OF[check_purpose(purpose)]} takes a run folder with its own checkpoint")


def config_difference(config: dict, folder: dict) -> tuple[str, object, object] | None:
    """(key, value in `config`, value in `folder`) of the first run setting (`RUN_SECTIONS`) where two run configs
    differ, or None: the same run. Keys only one side has (added by a later memstream) and `RESUME_KEYS` are not
    compared; nor are sections only one side has: an emptied config.yaml was "another run's checkpoint" (seed=0
    against seed=None), while a damaged one resumed."""
    from agents.config import flatten_config

    ours, theirs = (_options_apart(flatten_config({k: c[k] for k in RUN_SECTIONS if k in c})) for c in (config, folder))
    differ = [k for k in ours if k in theirs and k not in RESUME_KEYS and ours[k] != theirs[k]]
    return (differ[0], ours[differ[0]], theirs[differ[0]]) if differ else None


def _options_apart(flat: dict) -> dict:
    """`flatten_config`'s output with env.kwargs as one key per option: another run's checkpoint of other env options
    was named by both whole option dicts (two lines' worth of options, the differing one somewhere inside)."""
    kwargs = flat.pop("env.kwargs", None)
    if isinstance(kwargs, dict):
        flat |= {f"env.kwargs.{k}": v for k, v in kwargs.items()}
    elif kwargs is not None:
        flat["env.kwargs"] = kwargs
    return flat


def _with_that_version(path: str | Path, purpose: str) -> str:
    """The fix for a saved config this memstream cannot use as it is: the version that wrote it, or (resume) a new
    run from the run folder's config.yaml."""
    return {"resume": f"resume it with that version, or start a new run with config={run_dir_of(path) / 'config.yaml'}",
            "evaluate": "evaluate it with that version"}[check_purpose(purpose)]


def check_saved_config(saved_config: dict, path: str | Path, purpose: str) -> None:
    """The config saved in a checkpoint is valid on its own, or one line that blames the file. resume= and
    agents.evaluate call it when the saved config with the caller's few changes fails validate: validate's line for
    the saved part named a fix ("set model.dim only") that neither of them takes."""
    from omegaconf import OmegaConf

    from agents.config import ConfigError, validate

    try:
        validate(OmegaConf.create(saved_config))
    except ConfigError as exc:
        problem = str(exc).split("; ")[0]  # the line's fix is for a command line, which this config is not
        raise CheckpointError(f"checkpoint {str(path)!r} holds a config this memstream refuses ({problem}): it was "
                              f"edited, or another memstream version wrote it: {_with_that_version(path, purpose)}"
                              ) from None


# memory keys added to the run config after checkpoints of this format were written, with the value the code that
# wrote those checkpoints used (the store's settings then); every other key is in every such checkpoint
MEMORY_KEYS_ADDED = {"store_ivf_lists": 0, "store_ivf_probes": 0, "store_hnsw_neighbors": 32,
                     "store_hnsw_ef_search": 64, "store_hnsw_min_entries": 1024, "store_importance_halflife": 0.0}

CONTEXT_KEYS = ("context_fixed", "context_scale", "context_restart")  # read only when context_decay > 0


def load_model_weights(model: torch.nn.Module, weights: dict, path: str | Path) -> None:
    """load_state_dict with shape/key mismatches turned into one CheckpointError line."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        # torch's first line is only "Error(s) in loading state_dict for MemNet:"; the next names the tensor
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model ({detail[:200]}); the model's "
                              "shape comes from model.* and the env (its vocab_size): keep the run's own "
                              "config.yaml and env options") from None
