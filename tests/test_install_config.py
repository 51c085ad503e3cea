"""The build configuration as a new user's `pip install` reads it (no deprecated field, a tensorboard whose command
runs with the setuptools torch pulls in), and CI's own virtual environment beside the developer's."""

from __future__ import annotations

import warnings

import pytest

from tests.repo_env import REPO

setuptools = pytest.importorskip("setuptools")


def test_pyproject_uses_no_setuptools_deprecated_field():
    """`project.license` as a TOML table ({ text = "MIT" }) is deprecated from setuptools 77: every build prints
    "By 2027-Feb-18, you need to update your project ... or your builds will no longer be supported", and
    `[build-system] requires = ["setuptools>=68"]` lets pip take whatever setuptools is newest then."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    from setuptools.warnings import SetuptoolsDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", SetuptoolsDeprecationWarning)
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.get_name() == "memstream"


def _fake_tools(folder):
    """A `python3` whose `-m venv DIR` makes a venv whose activate defines no-op `pip` and a passing `pytest`."""
    import os

    fake = folder / "fakebin"
    fake.mkdir()
    python3 = fake / "python3"
    python3.write_text('#!/bin/bash\nif [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"\n'
                       'printf \'pip() { :; }\\npytest() { return 0; }\\n\' > "$3/bin/activate"; exit 0; fi\n'
                       'exit 1\n')
    python3.chmod(0o755)
    return {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}


def test_ci_script_keeps_the_developers_own_venv(tmp_path):
    """README: `python3 -m venv .venv` (Quick start) makes the developer's environment in the repository; `bash
    .ci/run` "creates a fresh virtual environment" and must not delete theirs (with whatever else they installed
    there) on the way."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    mine = repo / ".venv" / "lib" / "my-own-package.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("installed by the developer")
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], env=_fake_tools(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert mine.is_file(), f"bash .ci/run deleted the developer's .venv (rc {done.returncode}: {done.stderr})"


def test_tensorboard_lower_bound_gives_a_working_tensorboard_command():
    """README: `tensorboard --logdir runs`. tensorboard 2.17.1-2.20.0 import `pkg_resources` in tensorboard/default.py
    (the command's plugin loader), which the setuptools that torch 2.13 pulls in (>=77.0.3; pip takes the newest)
    no longer has: `pip install "torch==2.13.0" -e . "tensorboard==2.17.1"` is accepted and the command then stops
    with `ModuleNotFoundError: No module named 'pkg_resources'`. 2.21.0 is the first without it."""
    import re

    from packaging.requirements import Requirement

    text = (REPO / "pyproject.toml").read_text()
    (spec,) = [m for m in re.findall(r'^\s*"([^"]+)"', text, re.M) if re.match(r"tensorboard\b", m)]
    allowed = Requirement(spec).specifier
    assert not any(allowed.contains(v) for v in ("2.17.1", "2.18.0", "2.19.0", "2.20.0")), spec


def test_the_installed_tensorboard_command_imports():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import tensorboard.default, tensorboard.program"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
