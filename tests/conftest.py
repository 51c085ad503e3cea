"""Test-wide settings: pin thread counts so the suite behaves the same on every 2-core machine
(FAISS's OpenMP and torch's intra-op pool otherwise fight over the cores; see DESIGN.md pitfalls)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import faiss  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)
