"""Test-wide settings: pin thread counts so the suite behaves the same on every 2-core machine
(FAISS's OpenMP and torch's intra-op pool otherwise fight over the cores; README "Threads on a busy machine")."""

import getpass
import os

import pytest

from tests.cuda import UNSET, USER_CUDA_DEVICES

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# The suite runs on the CPU also where CUDA is visible (issue 4: "the tests run on CPU"): there device=auto trained
# every test run on CUDA, whose kernels round otherwise (the bit-for-bit checks of chunk against step acting, of a
# resumed run, of an evaluation's untouched memory hold on the CPU). Hidden before torch starts CUDA, for the test
# processes and every command they start; tests/test_cuda.py gives its commands the devices the user had.
os.environ.setdefault(USER_CUDA_DEVICES, os.environ.get("CUDA_VISIBLE_DEVICES", UNSET))  # (xdist workers inherit)
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _own_ray_lock_folder() -> None:
    """Where another user's Ray made /tmp/_ray_lockfiles (mode 755), this user's sweeps cannot resume and agents.tune
    says to set RAY_TMPDIR (agents/tune_restore.py); the suite sets it to a folder of this user's, as told, rather
    than fail its sweep tests on another user's leftovers. Unset and untouched everywhere else (CI)."""
    from agents.tune_restore import unwritable_ray_lock_folder

    if unwritable_ray_lock_folder() is not None:
        os.environ["RAY_TMPDIR"] = f"/tmp/memstream-ray-{getpass.getuser()}"  # short: Ray's socket paths live there


_own_ray_lock_folder()

import faiss  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)

from hypothesis import settings  # noqa: E402

from tests.examples import examples  # noqa: E402

# a test without its own count draws hypothesis's default 100, scaled like the others (MEMSTREAM_EXAMPLES)
settings.register_profile("memstream", max_examples=examples(100))
settings.load_profile("memstream")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test starts with the pinned count: a command run in-process with `train.threads=N` (or a resume taking
    its run's count) leaves torch at N, and a later test in the same worker saw 10 threads where it checks 1."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def smoke():
    """The shipped `smoke` sweep, as agents.tune loads it (tests/test_tune_*.py)."""
    from agents.tune_space import load_sweep

    return load_sweep("smoke")


@pytest.fixture(scope="module")
def smoke_base(smoke):
    """The run config every smoke trial starts from."""
    from agents.config import load_config
    from agents.tune_overrides import resolve_overrides

    return load_config(resolve_overrides(smoke, []))


@pytest.fixture(scope="module")
def memnet_run(tmp_path_factory):
    """A tiny finished MemNet run on ContinualShift (store and cache tiers on), only read by the tests that take it
    (tests/test_evaluate_*.py)."""
    from agents import run
    from tests.test_run import tiny

    run_dir = tmp_path_factory.mktemp("memnet_run") / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    return run_dir
