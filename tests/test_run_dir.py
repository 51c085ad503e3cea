"""Generated run folders: a run claims its folder by making it, so runs started in the same second (also in
parallel, where another run takes the name between this one's naming and its mkdir) never share one."""

from agents import new_folders, run
from agents.trainer import Trainer
from tests.test_run import TINY_ENVS, TINY_MODEL

STAMP = "2026-12-01_07-00-00"
ARGS = ["env=ContinualShift-v0", "agent=lstm", *TINY_ENVS["ContinualShift-v0"], *TINY_MODEL, "train.episodes=0"]


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(new_folders.time, "strftime", lambda fmt: STAMP)
    for lr in ("0.001", "0.002"):
        assert run.main([*ARGS, f"runs_root={tmp_path}", f"train.lr={lr}"]) == 0
    base = tmp_path / "ContinualShift-v0" / "lstm"
    assert sorted(p.name for p in base.iterdir()) == [f"{STAMP}-1_s0", f"{STAMP}_s0"]
    assert "lr: 0.001" in (base / f"{STAMP}_s0" / "config.yaml").read_text()
    assert "lr: 0.002" in (base / f"{STAMP}-1_s0" / "config.yaml").read_text()


def test_a_name_taken_while_the_trainer_is_built_is_not_shared(tmp_path, monkeypatch):
    """Regression: the name was checked with exists() before the trainer was built and the folder made with
    exist_ok=True after, so two runs started together wrote one config.yaml, checkpoint and metrics.json (the last
    one's) and two event files into one folder."""
    monkeypatch.setattr(new_folders.time, "strftime", lambda fmt: STAMP)
    taken = tmp_path / "ContinualShift-v0" / "lstm" / f"{STAMP}_s0"
    build = Trainer.__init__

    def other_run_claims_the_name(self, *args, **kwargs):
        build(self, *args, **kwargs)
        taken.mkdir(parents=True)  # the other run, started in the same second, made its folder meanwhile

    monkeypatch.setattr(Trainer, "__init__", other_run_claims_the_name)
    assert run.main([*ARGS, f"runs_root={tmp_path}"]) == 0
    assert list(taken.iterdir()) == []  # the other run's folder is left alone
    mine = taken.with_name(f"{STAMP}-1_s0")
    assert (mine / "config.yaml").is_file() and (mine / "metrics.json").is_file()
    assert (mine / "checkpoints" / "last.pt").is_file()


def test_benchmarks_and_sweeps_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch, capsys):
    """The same claim for `agents.benchmark`'s default out= (two benchmarks wrote into one folder: one's run failed
    on the other's, and the results of one were lost) and for a new sweep (the second was refused as if it resumed
    the first: "in use by another sweep ... continue it with resume="). A refused benchmark leaves no folder."""
    from agents import benchmark
    from agents.tune_preflight import make_sweep_folder

    monkeypatch.setattr(new_folders.time, "strftime", lambda fmt: STAMP)
    monkeypatch.chdir(tmp_path)
    first, second = benchmark.default_out()[0], benchmark.default_out()[0]
    assert (first.name, second.name) == (STAMP, f"{STAMP}-1") and first.is_dir() and second.is_dir()
    claims = []
    real = benchmark.default_out
    monkeypatch.setattr(benchmark, "default_out", lambda: claims.append(real()) or claims[-1])
    assert benchmark.main(["agents=nope"]) == 2  # refused after its folder was claimed: the folder goes again
    assert "nope" in capsys.readouterr().err and claims[0][0].name == f"{STAMP}-2"
    assert sorted(p.name for p in (tmp_path / "runs" / "benchmark").iterdir()) == [STAMP, f"{STAMP}-1"]

    shown = tmp_path / "sweeps" / "smoke" / STAMP  # what prepare chose; another sweep made it since
    shown.mkdir(parents=True)
    claimed, made = make_sweep_folder(shown, new=True)
    assert claimed == shown.with_name(f"{STAMP}-1") and made == [claimed] and claimed.is_dir()
    assert make_sweep_folder(shown.with_name(f"{STAMP}-1"), new=True)[0].name == f"{STAMP}-2"  # from its stamp on
    assert make_sweep_folder(shown) == (shown, [])  # a resumed sweep: its own folder
