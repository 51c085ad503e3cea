"""memstream installed from its wheel (`pip install .`, not the editable install of the README's set-up): every
module and config file is in it, and the commands run from any folder with nothing of the repository on the path.
The editable install reads the repository itself, so a file missing from the package data would pass every other
test and fail only for a user who installed a wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.repo_env import REPO
from tests.test_run import tiny

PACKAGES = ("agents", "envs", "memory")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (building in the repository leaves build/ and an egg-info there),
    offline with the venv's own setuptools (the dev extra asks for it)."""
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(top / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (top / "dist").glob("memstream-*.whl")
    return path


def package_files() -> set[str]:
    """The repository's module and data files under the three packages, as paths inside a wheel."""
    return {p.relative_to(REPO).as_posix() for name in PACKAGES for p in (REPO / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".yaml")}


def test_the_wheel_holds_every_module_and_config_file_and_nothing_else(wheel):
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("memstream-")}
    expected = package_files()
    assert len(expected) > 100 and any(n.startswith("agents/conf/sweep/") for n in expected)
    assert expected - names == set(), "missing from the wheel"
    assert names - expected == set(), "in the wheel but not among the packages' files"


def test_the_commands_run_from_the_installed_wheel_in_another_folder(wheel, tmp_path):
    """agents.run trains and checkpoints, agents.evaluate re-evaluates, agents.tune lists its sweeps: each imports
    memstream from the installed wheel (the repository is neither the working folder nor on the path)."""
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                                "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the editable install's path entry

    def command(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    where = command("-c", "import agents.conf, envs, memory; print(agents.conf.__file__, envs.__file__, "
                          "memory.__file__)").stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    command("-m", "agents.run", *tiny("LongDependency-v0", "memnet", "run"))
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and (work / "run" / "checkpoints" / "last.pt").is_file()
    command("-m", "agents.evaluate", "checkpoint=run")
    assert json.loads((work / "run" / "eval.json").read_text())["accuracy"] == pytest.approx(metrics["accuracy"])
    assert "smoke" in command("-m", "agents.tune", "--help").stdout
