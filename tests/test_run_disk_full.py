"""A disk that fills (or a write that fails) while a run writes the files beside its checkpoint: config.yaml,
metrics.json, plots, TensorBoard's event file. Each was a traceback and exit 1; now one line naming the file and
the free space, exit 2, and the checkpoint kept, so resume= writes them again. The ENOSPC is simulated, so these
run without root (a small tmpfs showed the same)."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from agents import run
from agents.checkpoint import how_to_continue, load_checkpoint
from tests.test_run import tiny


def full_disk_at(monkeypatch, name: str, code: int = errno.ENOSPC) -> None:
    """os.replace onto a file called `name` fails as on a full disk (the atomic writers' last step), or with the
    error `code` (errno.EROFS: a read-only disk)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst).endswith(name):
            raise OSError(code, os.strerror(code))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name", ["metrics.json", "accuracy_matrix.png"])
def test_a_full_disk_at_the_report_is_one_line_and_resume_writes_it(tmp_path, capsys, monkeypatch, name):
    run_dir = tmp_path / "run"
    full_disk_at(monkeypatch, name)
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=2", "train.checkpoint_every=1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write {run_dir}/") and f"/{name} (No space left on device; " in err
    assert err.endswith(f"then continue with resume={run_dir}") and "\n" not in err, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["episode"] == 2
    assert not list(run_dir.rglob("*.tmp")), "the failed write's temp file was left"
    monkeypatch.undo()
    assert run.main([f"resume={run_dir}", "train.progress=false"]) == 0
    assert (run_dir / "metrics.json").is_file() and (run_dir / "plots" / "accuracy_matrix.png").is_file()


def test_a_read_only_disk_at_the_report_says_make_it_writable_not_free_space(tmp_path, capsys, monkeypatch):
    """A read-only disk was "(Read-only file system; 40 GiB free there): free space (or make the folder writable)":
    room was never the problem (memory.disk.write_failure, the rule every writer's line follows)."""
    run_dir = tmp_path / "run"
    full_disk_at(monkeypatch, "metrics.json", errno.EROFS)
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot write {run_dir}/metrics.json (Read-only file system): "
                                               f"make {run_dir} writable, then continue with resume={run_dir}")


def test_a_full_disk_under_tensorboard_s_writer_is_one_line_without_its_thread_s_traceback(tmp_path, capsys,
                                                                                          monkeypatch):
    """TensorBoard writes in a thread: it printed its own traceback ("Exception in thread ...") and the run's
    next flush raised the error again, a second traceback."""
    from tensorboard.summary.writer import record_writer

    real, calls = record_writer.RecordWriter.write, []

    def write(self, data):
        calls.append(1)
        if len(calls) > 40:  # past the first checkpoint's points
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=3", "train.checkpoint_every=1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write {run_dir}") and "(No space left on device; " in err, err
    assert "Traceback" not in err and "\n" not in err, err


def test_the_writer_thread_s_own_traceback_is_left_to_the_caller_s_line(monkeypatch):
    """(pytest puts its own threading.excepthook in place during a test, so the run above cannot show it.)"""
    import threading

    from tensorboard.summary.writer import event_file_writer

    from agents import tb_logger

    seen = []
    monkeypatch.setattr(tb_logger, "_THREAD_HOOK", seen.append)
    writer_thread = event_file_writer._AsyncWriterThread(None, None, 120)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for thread, exc in ((writer_thread, full), (threading.Thread(), full), (writer_thread, ValueError("bug"))):
        tb_logger._writer_thread_failures_raised_by_the_caller(
            threading.ExceptHookArgs([type(exc), exc, None, thread]))
    assert [(args.thread is writer_thread, args.exc_type) for args in seen] == [(False, OSError), (True, ValueError)]


def test_a_full_disk_at_a_sweep_s_results_is_one_line_naming_resume(tmp_path, capsys, monkeypatch):
    """agents.tune's results.csv / results.json were a traceback at the end of a sweep (agents.benchmark's were
    one line already)."""
    from types import SimpleNamespace

    from agents import tune

    monkeypatch.setattr(tune, "result_rows", lambda trials, plan, metric: [])
    full_disk_at(monkeypatch, "results.csv")
    plan = SimpleNamespace(metric="cl/ACC", name="s", mode="max", search_space={})
    assert tune._report([], plan, {}, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot write the results in {tmp_path} (No space left on device); free space, then "
                   f"write them again with: python -m agents.tune resume={tmp_path}")


def test_an_unreadable_event_file_at_a_resume_is_not_called_a_failed_write(tmp_path, capsys, monkeypatch):
    """A resumed run reads its TensorBoard event file (no permission: EACCES, a bytes name). The line said
    "cannot write b'<run>/events...' (Permission denied; 70 GiB free there): free space" of a file being read."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    def stopped(*args, **kwargs):  # a run stopped while writing its report: its resume reads the event file (a
        raise KeyboardInterrupt  # finished run's resume=, which writes nothing, does not)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(run, "write_report", stopped)
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 130
    monkeypatch.undo()
    event_file = next(run_dir.glob("events.out.tfevents.*"))

    def read(self, filename, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsencode(filename))

    monkeypatch.setattr(gfile.LocalFileSystem, "read", read)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}", "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: cannot read or write {event_file} (Permission denied): give it (and its folder) read and "
                   f"write permission, then continue with resume={run_dir}"), err


def test_how_to_continue_needs_a_checkpoint_not_just_its_folder(tmp_path):
    """A full disk can fail the first checkpoint write and leave checkpoints/ empty: then there is nothing to resume."""
    (tmp_path / "checkpoints").mkdir()
    assert how_to_continue(tmp_path) == "start the run again (no checkpoint was written before)"
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert how_to_continue(tmp_path) == f"continue with resume={tmp_path}"


def test_a_folder_in_place_of_a_report_file_at_a_resume_is_one_line(tmp_path, capsys):
    """A resume= of a run folder where a folder stood in place of config.yaml (or metrics.json, a plot) or a file in
    place of plots/ was an IsADirectoryError (FileExistsError) traceback and exit 1."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    (run_dir / "metrics.json").unlink()  # stopped while writing its report
    for name, make in [("config.yaml", os.mkdir), ("metrics.json", os.mkdir),
                       ("plots", lambda p: open(p, "w").close())]:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        make(path)
        capsys.readouterr()
        assert run.main([f"resume={run_dir}", "train.progress=false"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: cannot write {path} (") and "\n" not in err, err
        assert err.endswith(f"a folder is where the run writes a file, or a file where it makes a folder; move it "
                            f"away, then continue with resume={run_dir}"), err
        os.rmdir(path) if path.is_dir() else path.unlink()
