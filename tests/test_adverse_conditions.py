"""Runs and saves under adverse conditions: a log on a full disk, stderr closed, file names near NAME_MAX, a
run_dir too long for the run's files, a file its user made private, a temp folder without flock, a run_dir holding
someone else's config.yaml, a working folder deleted under the shell. Each was a crash, a lost report, a silent
overwrite or a wrong message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memory.persist import _TEMP_ROOM, _temp_stem, atomic_file, atomic_torch_save
from tests.repo_env import REPO, repo_env


@pytest.mark.parametrize("length", [220, 240, 250])
def test_atomic_writes_take_every_name_a_plain_open_takes(tmp_path, length):
    """A file name of 217..255 bytes is valid (a plain open() makes it), but the atomic writers' temp file
    `.<name>.<16 hex>-<pid>.<8 letters>.tmp` is ~39 bytes longer, over NAME_MAX: atomic_file raised ENAMETOOLONG,
    atomic_torch_save said "File name too long; N GiB free there ... free space and retry", and agents.evaluate
    out=<such a name> was refused only after the whole evaluation ran."""
    path = tmp_path / ("n" * (length - 3) + ".pt")
    with open(path, "wb") as f:  # the name itself is fine
        f.write(b"x")
    path.unlink()
    with atomic_file(path) as f:
        f.write(b"data")
    assert path.read_bytes() == b"data"
    atomic_torch_save({"format": "x", "a": 1}, path)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize("name", ["é" * 127 + "a", "a" + "€" * 84, "x" * 198 + "😀" * 10])
def test_a_long_name_s_temp_file_is_cut_at_a_character_boundary(name, tmp_path):
    """A cut inside a UTF-8 sequence left a lone surrogate: a temp name of invalid UTF-8 bytes, which file systems
    holding UTF-8 names only (APFS, ZFS utf8only) refuse, for exactly the 217..255-byte names the stem serves."""
    import torch

    stem = _temp_stem(name)
    assert len(stem.encode("utf-8")) <= _TEMP_ROOM  # (UnicodeEncodeError on a surrogate)
    assert _temp_stem(name + "b") != stem
    atomic_torch_save({"a": 1}, tmp_path / name)
    assert torch.load(tmp_path / name) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_run_dir_too_long_for_the_run_files_is_one_line_at_start(tmp_path):
    """run_dir= whose own length passes unusable_path (< 4095 bytes) but whose files do not fit (config.yaml's temp
    file, checkpoints/.last.pt.*.tmp past PATH_MAX): the run built its model and then died with an
    OSError traceback (exit 1, its folder left behind); a little shorter, it trained to the end and then said
    'File name too long; 74 GiB free there ... free space'. It should be refused at start, in one line, exit 2."""
    parts = []
    base = str(tmp_path)
    while len(base) + sum(len(p) + 1 for p in parts) < 4070:
        parts.append("b" * 200)
    run_dir = (base + "/" + "/".join(parts))[:4070]
    assert len(os.fsencode(run_dir)) < 4095
    proc = subprocess.run(
        [sys.executable, "-m", "agents.run", "env=LongDependency-v0", "agent=gru", "train.episodes=1",
         "train.lanes=2", "train.progress=false", f"run_dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert "run_dir=" in proc.stderr


def test_atomic_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    """_atomic_path's doc: the file gets "the permissions a plain open() would give". A plain open() of an existing
    file keeps its mode; the atomic save made a file its user had restricted to 0600 (a private checkpoint, a
    store's rows, an eval JSON) 0644, readable by everyone, at every save."""
    path = tmp_path / "private.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    with atomic_file(path, "w") as f:
        f.write('{"a": 1}')
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    atomic_torch_save({"format": "x"}, path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)


TINY = ["env=LongDependency-v0", "agent=gru", "train.episodes=1", "train.lanes=2", "train.progress=false"]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_log_on_a_full_disk_does_not_stop_the_run(tmp_path, stream):
    """`python -m agents.run ... > ~/run.log` where the log's disk is full (a home quota spent, the runs on another
    disk): the first print raised ENOSPC, the run stopped before training with `error: cannot write <run folder>
    (No space left on device; 74 GiB free there): free space` (exit 2: the run folder's disk was not full), and with
    stderr there, silently with exit 1. As with a closed pipe (README: output whose reader left "does not stop a
    command"), the run should go on to its end and write its files."""
    args = [a for a in TINY if not a.startswith("train.progress")]  # progress lines: stderr is no terminal
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "agents.run", *args, f"runs_root={tmp_path}"], cwd=REPO,
                              stdout=full if stream == "stdout" else subprocess.PIPE,
                              stderr=full if stream == "stderr" else subprocess.PIPE, timeout=600)
    assert proc.returncode == 0
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert len(list(tmp_path.rglob("last.pt"))) == 1


@pytest.mark.parametrize("err", ["ENOLCK", "EOPNOTSUPP", "ENOSYS"])
def test_a_cold_tier_in_a_temp_dir_without_flock_is_made_unlocked(tmp_path, monkeypatch, err):
    """TMPDIR on a file system without flock (NFS without lockd: ENOLCK; Lustre mounted without flock: ENOSYS;
    some FUSE: EOPNOTSUPP): every TieredKVCache with a cold tier (a MemNet run's default memory.cache_cold) raised
    that OSError from `_claim_cold_dir` (agents.run: a traceback, exit 1), leaving its private folder and a
    .owner.lock.<hex> file behind. The run folder's own lock runs unlocked with a note there (README); the cold
    folder has a pid fallback already (Windows) and should use it."""
    import errno
    import tempfile

    import memory.cache_cold_dirs as cold_dirs
    from memory.cache import TieredKVCache

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again

    def no_flock(fd, op):
        raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)))

    monkeypatch.setattr(cold_dirs.fcntl, "flock", no_flock)
    cache = TieredKVCache(heads=2, head_dim=4, hot=4, warm=4, cold=8)
    folders = list(tmp_path.glob(f"{cold_dirs.COLD_DIR_PREFIX}*"))
    assert len(folders) == 1
    assert not [p for p in folders[0].iterdir() if p.name.startswith(f".{cold_dirs.OWNER_LOCK}.")]  # no pending lock
    del cache
    import gc

    gc.collect()
    assert list(tmp_path.glob(f"{cold_dirs.COLD_DIR_PREFIX}*")) == []  # its folder went with it


def test_run_dir_holding_a_foreign_config_yaml_is_refused_not_overwritten(tmp_path, capsys):
    """run_dir= of a folder holding a config.yaml that is no run's (a project folder: `run_dir=.` where a Hydra or
    app config.yaml lies) silently replaced that file with the run's config. A foreign metrics.json there is refused
    ("holds a finished run with no readable config.yaml"); a run config.yaml (a run stopped before its first
    checkpoint, which may be started again in its folder) is not at stake."""
    from agents import run

    folder = tmp_path / "project"
    folder.mkdir()
    mine = "database:\n  host: prod.example.com\n  password: hunter2\n"
    (folder / "config.yaml").write_text(mine)
    code = run.main([*TINY, f"run_dir={folder}"])
    assert (folder / "config.yaml").read_text() == mine
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "config.yaml" in err and "\n" not in err


def test_a_run_with_stderr_closed_writes_its_report(tmp_path):
    """`python -m agents.run ... 2>&-` (stderr closed: Python's sys.stderr is None): the progress lines' stream was
    None, and `EvalLines.close()` raised AttributeError ('NoneType' object has no attribute 'flush') after training:
    exit 1, no metrics.json, no plots, no summary (and the traceback had nowhere to go). A closed output should not
    stop a command (README: output whose reader left)."""
    cmd = " ".join([sys.executable, "-m", "agents.run", *[a for a in TINY if not a.startswith("train.progress")],
                    f"runs_root={tmp_path}"])
    proc = subprocess.run(["bash", "-c", f"exec 2>&-; exec {cmd}"], cwd=REPO, capture_output=False,
                          stdout=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1


@pytest.mark.parametrize("entry", ["run", "evaluate", "tune", "benchmark"])
def test_a_deleted_working_folder_is_one_line_naming_it(tmp_path, entry):
    """A shell whose folder was deleted under it: torch's import died in MKL (`Cannot load libtorch_cpu.so`), or the
    command said `error: [Errno 2] No such file or directory`, naming nothing."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m agents.{entry} env=ContinualShift-v0'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=repo_env(PWD=str(gone)))
    assert done.returncode == 2 and done.stderr == f"error: the working folder {gone} no longer exists (deleted or " \
        "moved after the shell entered it); cd to a folder that exists and run the command again\n", done.stderr


def test_an_atomic_save_writes_through_a_linked_file(tmp_path):
    """A checkpoints/last.pt linked to a file on another disk: the save replaced the link with a file on the run's
    disk (os.replace renames onto the link itself), where a plain open() writes to the link's target."""
    import torch

    elsewhere = tmp_path / "big_disk" / "real.pt"
    elsewhere.parent.mkdir()
    atomic_torch_save({"a": 1}, elsewhere)
    link = tmp_path / "run" / "checkpoints" / "last.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    atomic_torch_save({"a": 2}, link)
    with atomic_file(tmp_path / "run" / "checkpoints" / "note.txt") as f:  # (a plain file beside it: as before)
        f.write(b"x")
    assert link.is_symlink() and os.readlink(link) == str(elsewhere)
    assert torch.load(elsewhere) == {"a": 2} and sorted(p.name for p in elsewhere.parent.iterdir()) == ["real.pt"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["last.pt", "note.txt"]


def test_a_deleted_working_folder_with_a_newline_in_its_name_is_one_line(tmp_path):
    """The shell's PWD was printed raw: a folder `a<newline>b` made the line two."""
    gone = tmp_path / "a\nb"
    gone.mkdir()
    script = 'cd "$GONE" && rmdir "$GONE" && exec "$PY" -m agents.run env=ContinualShift-v0'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=repo_env(PWD=str(gone), GONE=str(gone), PY=sys.executable))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: the working folder {tmp_path}/a\\nb no longer exists"), done.stderr


def test_an_atomic_save_through_a_dangling_link_makes_no_folder_at_its_target(tmp_path):
    """A checkpoints/last.pt linked into a disk not mounted (its folder missing): the save made the target's folders
    on the run's disk (under the mount point, hidden once the disk is mounted); it replaces the link, as before."""
    import torch

    unmounted = tmp_path / "mnt"
    unmounted.mkdir()
    link = tmp_path / "run" / "checkpoints" / "last.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(unmounted / "run1" / "last.pt")
    atomic_torch_save({"a": 1}, link)
    assert list(unmounted.iterdir()) == []
    assert not link.is_symlink() and torch.load(link) == {"a": 1}
