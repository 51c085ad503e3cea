"""`python -m agents.benchmark`'s path keys, out= and suite=, take ~ (your home folder) as agents.run's do."""

import yaml

from agents import benchmark
from tests.test_benchmark import NR


def test_out_and_suite_expand_a_leading_tilde(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "mine.yaml").write_text(yaml.safe_dump({"envs": {NR: {}}, "variants": {"m": {"agent": "lstm"}}}))
    opts, _ = benchmark.parse_args(["suite='~/mine.yaml'", "out=~/bench"])
    assert opts["suite"] == str(home / "mine.yaml")  # was '~/mine.yaml': "suite file ... not found"
    assert opts["out"] == str(home / "bench")  # was '~/bench': a folder named ~ in the working folder
    # the whole command: the suite is found and read (the error is the unknown variant's), nothing made under ./~
    assert benchmark.main(["suite=~/mine.yaml", "out='~/bench'", "agents=gru"]) == 2
    assert "gru is not in the suite; choose from: m" in capsys.readouterr().err
    assert not (tmp_path / "~").exists()
