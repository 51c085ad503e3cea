"""The tensors of a checkpoint that `load_state_dict` takes on trust, checked before a restored run uses them.

torch's optimizer loads any state tensors and the per-lane state was checked for its shapes only, so an edited or
foreign checkpoint went on to fail far from its cause: fused AdamW stepping a moment of another shape ended the
process with a segmentation fault, a NaN moment or step read as "training diverged; lower train.lr", a float64 slot
bank or an out-of-vocabulary window token was a traceback from the first forward. Each is now the checkpoint's one
`garbled` line, naming the tensor.
"""

from __future__ import annotations

import math

import torch

from agents.checkpoint_fields import garbled

ADAM_HYPER = {"lr": (0.0, math.inf), "eps": (0.0, math.inf), "weight_decay": (0.0, math.inf)}  # [low, high)


def _kind(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def check_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], path) -> None:
    """After `optimizer.load_state_dict`: each parameter's state (`names`: id(parameter) -> its name) holds tensors of
    the parameter's shape and dtype, finite, second moments >= 0, and a step >= 0; the groups' hyper-parameters are
    in range. One CheckpointError line for the first that is not."""
    for group in optimizer.param_groups:
        for key, (low, high) in ADAM_HYPER.items():
            value = group.get(key)
            if value is not None and not (isinstance(value, (int, float)) and low <= value < high):
                raise garbled(path, f"optimizer {key}={value!r}")
        betas = group.get("betas", (0.0, 0.0))
        if not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise garbled(path, f"optimizer betas={betas!r}")
        for param in group["params"]:
            name = names.get(id(param), "a parameter")
            for key, value in optimizer.state.get(param, {}).items():
                where = f"optimizer state {key} of {name}"
                if not torch.is_tensor(value):
                    raise garbled(path, f"{where} is a {type(value).__name__}, not a tensor")
                if key == "step":
                    if value.numel() != 1 or not _finite(value) or float(value) < 0:
                        raise garbled(path, f"{where}: {value.tolist()} (a count of steps >= 0)")
                    continue
                if value.shape != param.shape or value.dtype != param.dtype:
                    raise garbled(path, f"{where} is {_kind(value)}, the parameter {_kind(param)}")
                if not _finite(value):
                    raise garbled(path, f"{where} holds NaN or inf")
                if key.endswith("exp_avg_sq") and bool((value < 0).any()):
                    raise garbled(path, f"{where} holds negative values (a mean of squares)")


def check_lane_state(saved: dict, fresh: dict, memory: dict, model, lanes: int, trained: bool) -> None:
    """The recurrent per-lane state of a checkpoint against a fresh one of this run (`Trainer.state`): the same
    tensors with the same shapes and dtypes, floats finite, counters and token ids >= 0, token ids within `model`'s
    vocabulary, the controller's buffer marks within its buffers; and its memory state (`memory`) there when the
    model has a store and the run `trained` (an empty one loaded, and the run went on with its long-term memory
    gone; untrained, it is what runs before 2026-12-01 saved: their store was made at the first forward), with its
    `lanes` (10^9 of them was "the run does not fit in memory; lower train.lanes"). Raises ValueError (the
    restore's one line)."""
    if isinstance(memory, dict) and memory and memory.get("lanes") != lanes:
        raise ValueError(f"its memory state holds {memory.get('lanes')!r} lanes, the run {lanes}")
    if not memory and trained and getattr(model, "store", None) is not None:
        raise ValueError("its memory state is empty, and this run's model has a store")
    vocab_size = model.cfg.vocab_size
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        raise ValueError("its per-lane state is not a mapping of tensors")
    shapes = {k: tuple(v.shape) for k, v in saved.items()}
    if shapes != {k: tuple(v.shape) for k, v in fresh.items()}:
        raise ValueError(f"its per-lane state has {sorted(set(saved) ^ set(fresh)) or 'other shapes'}")
    for name, value in saved.items():
        if value.dtype != fresh[name].dtype:
            raise ValueError(f"its per-lane state {name} is {_kind(value)}, this run's {_kind(fresh[name])}")
        if not _finite(value):
            raise ValueError(f"its per-lane state {name} holds NaN or inf")
        if value.dtype in (torch.int64, torch.int32) and value.numel() and int(value.min()) < 0:
            raise ValueError(f"its per-lane state {name} holds {int(value.min())} (counters and token ids are >= 0)")
        if name.endswith("tokens") and value.numel() and int(value.max()) >= vocab_size:
            raise ValueError(f"its per-lane state {name} holds token {int(value.max())}, this env's vocabulary "
                             f"has {vocab_size}")
    for mark in ("ctrl.end", "ctrl.mark"):  # positions in the controller's K/V buffers, from their start C on
        if mark in saved and "ctrl.k0" in saved:
            low, size = int(fresh[mark].reshape(-1)[0]), saved["ctrl.k0"].shape[2]
            if not all(low <= int(v) <= size for v in saved[mark].reshape(-1)):
                raise ValueError(f"its per-lane state {mark}={saved[mark].tolist()} is outside the window buffer "
                                 f"[{low}, {size}]")
