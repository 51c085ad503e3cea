"""memstream's memory components: each usable on its own, each taking the shared `MemoryConfig`.

    MultiHeadMemoryBank   slot memory with top-k cosine read heads and gated, allocated writes (slots.py)
    LM2Memory, LinformerMemory   gated internal memories (internal.py)
    FaissStore            long-term key/value store with metadata and eviction (store.py)
    TieredKVCache         precomputed attention K/V in hot / warm (int8) / cold (memory-mapped) tiers (cache.py)
    MemoryAttention, Fusion   reading memory (attention.py, fusion.py)
    MemoryAugmentedLayer, MemoryAugmentedTransformer   transformer blocks that read memory (augmented.py)
    retrieve_memory_kv, write_memory   the store + cache adapter (retrieval.py)
    memory_regularisers   utilisation / pressure / sparsity losses (losses.py); metrics in metrics.py
"""

from __future__ import annotations

import importlib

# name -> module: imported on first use (PEP 562), so that `memory.config` (a dataclass that every command line
# validates against) does not import torch and FAISS with it; `from memory import FaissStore` works as before
_EXPORTS = {
    "MemoryAttention": "attention", "MemoryAugmentedLayer": "augmented", "MemoryAugmentedTransformer": "augmented",
    "TieredKVCache": "cache", "MemoryConfig": "config", "Fusion": "fusion", "LinformerMemory": "internal",
    "LM2Memory": "internal", "build_internal_memory": "internal", "memory_regularisers": "losses",
    "retrieve_memory_kv": "retrieval", "write_memory": "retrieval", "MultiHeadMemoryBank": "slots",
    "ReadInfo": "slots", "SlotState": "slots", "WriteInfo": "slots", "FaissStore": "store", "SearchResult": "store",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'memory' has no attribute {name!r}")
    return getattr(importlib.import_module(f"memory.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
