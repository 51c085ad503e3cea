"""memstream's memory components: each usable on its own, each taking the shared `MemoryConfig`.

    MultiHeadMemoryBank   slot memory with top-k cosine read heads and gated, allocated writes (slots.py)
    LM2Memory, LinformerMemory   gated internal memories (internal.py)
    FaissStore            long-term key/value store with metadata and eviction (store.py)
    TieredKVCache         precomputed attention K/V in hot / warm (int8) / cold (memory-mapped) tiers (cache.py)
    MemoryAttention, Fusion, MemoryAugmentedLayer, MemoryAugmentedTransformer   reading memory (attention.py)
    retrieve_memory_kv, write_memory   the store + cache adapter (retrieval.py)
    memory_regularisers   utilisation / pressure / sparsity losses (losses.py); metrics in metrics.py
"""

from memory.attention import MemoryAttention, MemoryAugmentedLayer, MemoryAugmentedTransformer
from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.fusion import Fusion
from memory.internal import LinformerMemory, LM2Memory, build_internal_memory
from memory.losses import memory_regularisers
from memory.retrieval import retrieve_memory_kv, write_memory
from memory.slots import MultiHeadMemoryBank, ReadInfo, SlotState, WriteInfo
from memory.store import FaissStore, SearchResult

__all__ = [
    "Fusion", "FaissStore", "LM2Memory", "LinformerMemory", "MemoryAttention", "MemoryAugmentedLayer",
    "MemoryAugmentedTransformer", "MemoryConfig", "MultiHeadMemoryBank", "ReadInfo", "SearchResult", "SlotState",
    "TieredKVCache", "WriteInfo", "build_internal_memory", "memory_regularisers", "retrieve_memory_kv",
    "write_memory",
]
