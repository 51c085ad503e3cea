"""Replacing an `os` function for one test so that pathlib's calls meet the replacement too."""

from __future__ import annotations

import os
import pathlib


def patch_os(monkeypatch, name: str, replacement) -> None:
    """`os.<name>` becomes `replacement` for the test. Python 3.10's pathlib bound os.stat, os.mkdir, os.listdir ...
    into its `_NormalAccessor` at import, so a patched `os` alone never reached Path.is_dir, exists or mkdir there
    (a simulated refusal was not seen, and the tests of the one-line errors failed on 3.10 only); from 3.11 pathlib
    calls `os` itself."""
    monkeypatch.setattr(os, name, replacement)
    accessor = getattr(pathlib, "_NormalAccessor", None)
    if accessor is not None and name in vars(accessor):
        monkeypatch.setattr(accessor, name, staticmethod(replacement))
