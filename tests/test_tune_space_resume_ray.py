"""Sweep plans without Ray: resume= of a damaged sweep folder, Ray addresses, the grace period (nothing starts)."""

from __future__ import annotations

import pickle
import re

import pytest

from agents.config import ConfigError


# ---------------------------------------------------------------- resume= and Ray (nothing starts)
def _saved_sweep(folder, pickle_bytes: bytes, plan_text: bytes | None = None):
    import yaml

    from agents.tune import prepare

    plan, base, _ = prepare(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={folder / 'runs'}"])
    folder.mkdir(exist_ok=True)
    (folder / "tuner.pkl").write_bytes(pickle_bytes)
    (folder / "experiment_state-2026-12-02_00-00-00.json").write_text("{}")  # Tune saved its trials (a real sweep's)
    (folder / "sweep.yaml").write_bytes(plan_text or yaml.safe_dump({"plan": plan.to_dict(), "base": base}).encode())
    return folder


@pytest.mark.parametrize("pickle_bytes, plan_text, message", [
    (b"garbage not a pickle", None, r"tuner.pkl' is damaged \(UnpicklingError: .*\); start the sweep afresh"),
    (b"", None, r"tuner.pkl' is damaged \(EOFError: .*\); start the sweep afresh"),
    (b"x", b"\xff\xfe\x00garbage\x80", r"sweep.yaml' is damaged; start the sweep afresh"),
])
def test_resume_of_a_damaged_sweep_folder_is_one_line(tmp_path, monkeypatch, capsys, pickle_bytes, plan_text,
                                                      message):
    from agents import tune as agents_tune

    folder = _saved_sweep(tmp_path / "sweep", pickle_bytes, plan_text)
    monkeypatch.setattr(agents_tune, "start_ray", lambda sweep_dir: False)  # Tune fails before it needs Ray
    assert agents_tune.main([f"resume={folder}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and re.search(message, err), err


def test_a_malformed_ray_address_is_one_line(tmp_path, monkeypatch):
    import ray

    from agents.tune import start_ray

    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")  # ray.init rejects it before it starts or connects anything
    with pytest.raises(ConfigError, match=r"RAY_ADDRESS='nonsense': not a Ray address \(.*\); set it to "
                                          "host:port") as err:
        start_ray(tmp_path)
    assert "\n" not in str(err.value) and not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")  # an audit, 2026-12-03: Ray's words span four lines
    with pytest.raises(ConfigError, match=r"^RAY_ADDRESS='http://127.0.0.1:1': not a Ray address \(Invalid Ray "
                                          r"address: .* either: 1\. Unset RAY_ADDRESS .*\); set it to ") as err:
        start_ray(tmp_path)
    assert "\n" not in str(err.value) and not ray.is_initialized()


def test_an_unreachable_ray_address_is_one_line_at_once(tmp_path, monkeypatch):
    """ray.init retried a host:port where nothing listens for over 3 minutes; the address is now tried first."""
    import socket

    import ray

    from agents.tune import start_ray

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ConfigError, match=rf"RAY_ADDRESS='{re.escape(address)}': nothing answers at "
                                              rf"127.0.0.1:{port} \(.*\); start the cluster's head") as err:
            start_ray(tmp_path)
        assert "\n" not in str(err.value) and not ray.is_initialized()


def test_a_listening_ray_address_passes_the_reachability_check():
    import socket

    from agents.tune_preflight import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    for left_to_ray in (None, "", "auto", "local", "nonsense", "http://127.0.0.1:1"):
        check_reachable(left_to_ray)


def test_the_grace_period_is_checked_only_for_asha_which_uses_it(tmp_path):
    """The README turns early stopping off with sweep.scheduler.type=fifo; short trials then failed on ASHA's
    grace period all the same."""
    from agents.tune import prepare

    short = ["env=LongDependency-v0", "sweep=memory", "train.episodes=1", f"runs_root={tmp_path}"]
    with pytest.raises(ConfigError, match=r"sweep.scheduler.grace_period=10 must be <= the episodes of the longest "
                                          r"trial \(1\)"):
        prepare(short)
    plan, _, _ = prepare([*short, "sweep.scheduler.type=fifo"])
    assert plan.scheduler["type"] == "fifo" and plan.scheduler["max_t"] == 1


@pytest.mark.parametrize("name, whole", [
    ("experiment_state-2026-12-02_00-00-09.json", b'{"trial_data": [], "runner_data": {}, "stats": {}}'),
    ("basic-variant-state-2026-12-02_00-00-09.json", pickle.dumps({"_iterators": [], "_uuid_prefix": "x"})),
])
def test_resume_of_a_sweep_whose_tune_state_was_cut_short_is_one_line(tmp_path, monkeypatch, capsys, name, whole):
    """Tune copies its state files into the sweep folder in place: a sweep killed during a copy leaves the newest cut
    short. Tune's restore then started the experiment over without its search space: one trial of none of the swept
    values in a new folder (the saved state replaced), then `error: memory.slots: null is not a whole number`. Read
    before Ray starts; an older, whole file of the same kind (an earlier session's) does not hide the newest."""
    from agents import tune as agents_tune
    from agents.tune_saved import load_saved_plan

    folder = _saved_sweep(tmp_path / "sweep", b"")
    (folder / name.replace("00-00-09", "00-00-00")).write_bytes(whole)
    (folder / name).write_bytes(whole)
    monkeypatch.setattr(agents_tune, "start_ray", lambda sweep_dir: pytest.fail("Ray started"))
    assert load_saved_plan(folder)  # whole: read back
    (folder / name).write_bytes(whole[: len(whole) // 2])
    assert agents_tune.main([f"resume={folder}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {str(folder / name)!r} is damaged (") and len(err.splitlines()) == 1, err
    assert err.endswith("; cut short, as by a kill while Tune wrote it); start the sweep afresh"), err
