"""The environment of a command a test starts from this checkout: the checkout first on PYTHONPATH, the user's own
entries kept after it (packages installed with `pip install --target` and found through PYTHONPATH, as on a GPU
machine that lacks them, were lost when the tests replaced it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_env(**extra: str) -> dict[str, str]:
    """os.environ with REPO first on PYTHONPATH, then `extra`'s variables."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
