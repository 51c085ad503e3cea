"""Failed memory allocations told from bugs, and the one line that names the sizes to lower (agents.run,
agents.evaluate, the preflight check, the benchmark scripts)."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

# the allocator's own words for a failed allocation: torch's CPU allocator raises a plain RuntimeError ("...
# DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"), FAISS a RuntimeError with bad_alloc
_ALLOCATION_FAILED = ("can't allocate memory", "Cannot allocate memory", "std::bad_alloc", "out of memory")
# sizes whose byte count overflows before anything is asked for (torch: RuntimeError, or a TypeError where one size
# passes int64; numpy: ValueError)
_SIZE_OVERFLOWED = ("Storage size calculation overflowed", "array is too big", "Maximum allowed dimension exceeded",
                    "Overflow when unpacking long")  # torch 2.6: "long", 2.13: "long long"
# what an allocation failure is raised as; `allocation_failure` tells it from a bug of the same type
ALLOCATION_ERRORS = (MemoryError, RuntimeError, ValueError, TypeError)


def allocation_failure(exc: BaseException) -> bool:
    """A failed memory allocation: MemoryError (numpy's too), torch's OutOfMemoryError (CUDA), or a RuntimeError /
    ValueError / TypeError in the allocator's words. Any other of those is a bug and keeps its traceback."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, ALLOCATION_ERRORS) and any(
        words in str(exc) for words in _ALLOCATION_FAILED + _SIZE_OVERFLOWED)


def does_not_fit(cfg: DictConfig, exc: BaseException, what: str = "the run", fix: str = "lower them") -> str:
    """One line for an allocation failure of `what`: how much was asked (when the error says), the config's sizes
    with their values (the keys to lower) and `fix`."""
    keys = ["train.lanes", "model.dim", "model.layers", "model.window", "model.mlp_ratio"]
    if cfg.agent.name == "memnet":  # the memory's sizes exist only in MemNet (a store only with memory.store)
        keys += ["memory.slots"] + (["memory.store_capacity", "memory.cache_hot", "memory.cache_warm",
                                     "memory.cache_cold"] if cfg.memory.store else [])
    sizes = ", ".join(f"{k}={OmegaConf.select(cfg, k)}" for k in keys)
    return f"{what} does not fit in memory ({allocation_reason(exc)}) with the sizes {sizes}; {fix}"


def allocation_reason(exc: BaseException) -> str:
    """What an allocation failure asked for: `an allocation of 37.3 GiB failed` when the error says how much."""
    from memory.metrics import format_bytes  # here: at module level it imported torch into every command-line
    # parser (benchmarks/envs.py, which needs no torch, took 4 s to refuse a bad argument)

    text = str(exc)
    in_bytes = re.search(r"allocate (\d+) bytes", text)  # torch's words; numpy's: "Unable to allocate 2.18 PiB"
    in_units = re.search(r"allocate ([\d.,]+ ?[KMGTPE]?i?B)\b", text)  # (thousands of PiB: 1,234 PiB)
    size = format_bytes(int(in_bytes[1])) if in_bytes else in_units[1].replace(". ", " ") if in_units else None
    return (f"an allocation of {size} failed" if size else "sizes beyond what can be allocated"
            if any(words in text for words in _SIZE_OVERFLOWED) else "out of memory")
