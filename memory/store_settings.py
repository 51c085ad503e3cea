"""FaissStore's constructor arguments checked against MemoryConfig's bounds: each refusal is one ValueError naming
the argument, the value and what it may be (store.py stays about writing, searching and evicting)."""

from __future__ import annotations

import numpy as np

from memory.config import (
    FAISS_INT_MAX,
    MAX_THREADS,
    MIN_POINTS_PER_LIST,
    STORE_EVICTIONS,
    STORE_INDEXES,
    STORE_METRICS,
    STORE_PRECISIONS,
    ivf_lists_for,
)
from memory.store_lookup import CALLER_META
from memory.store_search import CodedKeys


def check_settings(dim, value_dim, capacity, lanes, scope, index, eviction, threads, ivf_lists, ivf_probes,
                   hnsw_neighbors, hnsw_ef_search, hnsw_min_entries, exact_block, metric, precision,
                   coded: CodedKeys | None, importance_halflife) -> tuple[int | None, int | None, int | None]:
    """Refuses any FaissStore argument out of bounds (the arguments as FaissStore.__init__ takes them). Returns
    ivf_lists, ivf_probes and exact_block as python ints, or None (automatic)."""
    # MemoryConfig's bounds (an HNSW graph of degree 1 segfaulted FAISS; thousands of threads fail mid-run)
    for name, v, low, high in (("dim", dim, 1, 0), ("value_dim", value_dim, 1, 0), ("capacity", capacity, 1, 0),
                               ("lanes", lanes, 1, 0), ("threads", threads, 1, MAX_THREADS),
                               ("hnsw_neighbors", hnsw_neighbors, 2, FAISS_INT_MAX),
                               ("hnsw_ef_search", hnsw_ef_search, 1, FAISS_INT_MAX),
                               ("hnsw_min_entries", hnsw_min_entries, 1, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low or high and v > high:
            bound = f"in [{low}, {high}]" if high else f">= {low}"
            raise ValueError(f"FaissStore: {name}={v!r}: must be an int {bound}")
    for name, v in (("ivf_lists", ivf_lists), ("ivf_probes", ivf_probes), ("exact_block", exact_block)):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
            raise ValueError(f"FaissStore: {name}={v!r}: must be an int >= 1 or None (automatic)")
    # python ints from here on: numpy scalars in the saved settings would not load with weights_only=True
    ivf_lists, ivf_probes, exact_block = (v if v is None else int(v) for v in (ivf_lists, ivf_probes, exact_block))
    if index == "ivf" and ivf_lists is not None and ivf_lists > max(1, capacity // MIN_POINTS_PER_LIST):
        raise ValueError(f"FaissStore: ivf_lists={ivf_lists}: at most capacity // {MIN_POINTS_PER_LIST} = "
                         f"{max(1, capacity // MIN_POINTS_PER_LIST)} (FAISS trains each list on >= "
                         f"{MIN_POINTS_PER_LIST} keys)")
    if index == "ivf" and ivf_probes is not None and ivf_probes > ivf_lists_for(capacity, ivf_lists):
        raise ValueError(f"FaissStore: ivf_probes={ivf_probes}: at most the {ivf_lists_for(capacity, ivf_lists)} "
                         "lists a partition has")
    number = isinstance(importance_halflife, (int, float, np.integer, np.floating)) and not isinstance(
        importance_halflife, bool)  # a bool is an int to python, not a half-life
    if importance_halflife is not None and not (number and 0 < importance_halflife < float("inf")):
        raise ValueError(f"FaissStore: importance_halflife={importance_halflife!r}: must be a finite number > 0 "
                         "(adds), or None (no decay)")
    if precision not in STORE_PRECISIONS:
        raise ValueError(f"FaissStore: precision={precision!r}: choose one of {STORE_PRECISIONS}")
    if metric not in STORE_METRICS:
        raise ValueError(f"FaissStore: metric={metric!r}: choose one of {STORE_METRICS}")
    if coded is not None and (metric != "ip" or index != "flat" or coded.width > dim
                              or not set(coded.fields) <= set(CALLER_META)):
        raise ValueError(f"FaissStore: coded keys need metric='ip', index='flat', fields among {CALLER_META} "
                         f"and at most dim={dim} coded columns; got metric={metric!r}, index={index!r}, "
                         f"fields={coded.fields}, {coded.width} columns")
    for name, value, choices in (("scope", scope, ("lane", "shared")), ("index", index, STORE_INDEXES),
                                 ("eviction", eviction, STORE_EVICTIONS)):
        if value not in choices:
            raise ValueError(f"FaissStore: {name}={value!r}: choose one of {choices}")
    return ivf_lists, ivf_probes, exact_block
