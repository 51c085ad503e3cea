"""Where the test suite keeps the CUDA devices the user had (tests/conftest.py hides them from the suite) and how
tests/test_cuda.py gives them back to the commands it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.repo_env import repo_env

USER_CUDA_DEVICES = "MEMSTREAM_TEST_USER_CUDA_DEVICES"  # CUDA_VISIBLE_DEVICES as the user had it, or UNSET
UNSET = "<unset>"


def cuda_env() -> dict[str, str]:
    """This process's environment (tests/repo_env.py) with the user's CUDA devices visible again."""
    env = repo_env()
    user = env.get(USER_CUDA_DEVICES, UNSET)
    if user == UNSET:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        env["CUDA_VISIBLE_DEVICES"] = user
    return env


def cuda_visible() -> bool:
    """Whether a command started with `cuda_env()` sees a CUDA device: asked of a new python only where an NVIDIA
    driver is installed (on a machine without one, no torch start)."""
    if not (Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()):
        return False
    probe = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"],
                           env=cuda_env(), capture_output=True)
    return probe.returncode == 0
