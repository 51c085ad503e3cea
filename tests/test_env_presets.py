"""The registered presets (LongDependency-Easy-v0, ...) are env choices wherever an env is named: agents.run's
`env=`, a saved config, `--help`, a benchmark suite and a sweep. Each is its base env's config with the preset's
options (agents/env_presets.py), as the registry holds them (one place). They were
"unknown env" to agents.run, tune and benchmark, and a saved config naming one was composed over ContinualShift-v0's
settings. Tiny budgets."""

from __future__ import annotations

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

import envs
from agents import run
from agents.benchmark import plan
from agents.benchmark_suite import load_suite
from agents.config import load_config, to_yaml
from agents.config_file import from_yaml_file
from agents.env_presets import preset_bases, preset_options
from agents.run_config import help_text
from tests.test_run import tiny

PRESETS = {"LongDependency-Easy-v0": "LongDependency-v0", "LongDependency-Hard-v0": "LongDependency-v0",
           "ContinualShift-Gradual-v0": "ContinualShift-v0", "NeedleRecall-Hard-v0": "NeedleRecall-v0"}


def test_every_registered_preset_is_known_with_its_base():
    assert preset_bases() == PRESETS
    assert set(envs.ENV_IDS) == set(PRESETS) | set(PRESETS.values())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_env_preset_is_the_base_envs_config_with_the_presets_options(preset):
    base = PRESETS[preset]
    cfg, base_cfg = load_config([f"env={preset}"]), load_config([f"env={base}"])
    mine, theirs = OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(base_cfg, resolve=True)
    assert mine["env"]["id"] == preset
    expected_kwargs = theirs["env"]["kwargs"] | preset_options(preset)
    assert mine["env"]["kwargs"] == expected_kwargs and preset_options(preset)
    mine.pop("env"), theirs.pop("env")
    assert mine == theirs  # the base env's memory and training settings (NeedleRecall-Hard: its key lags)
    # the preset's options are the registry's (one place), and the env the run makes holds them
    registered = {k: list(v) if isinstance(v, tuple) else v for k, v in gym.spec(preset).kwargs.items()}
    assert registered == preset_options(preset)
    made = gym.make(preset, **expected_kwargs)  # what the trainer makes: the options go together
    assert made.spec.id == preset and made.unwrapped.vocab_size == expected_kwargs["vocab_size"]


def test_a_preset_can_take_option_overrides_and_help_lists_what_each_preset_changes():
    cfg = load_config(["env=ContinualShift-Gradual-v0", "env.kwargs.num_tasks=3"])
    assert (cfg.env.kwargs.num_tasks, cfg.env.kwargs.shift, cfg.env.kwargs.revisit) == (3, "gradual", True)
    text = help_text(["env=LongDependency-Easy-v0"])
    assert ("  LongDependency-Easy-v0: LongDependency-v0 with env.kwargs.distances=[1,2,4,8,16,32,64] "
            "env.kwargs.episode_length=320") in text.splitlines()
    assert "  env=LongDependency-Easy-v0" in text and "  env.kwargs.episode_length=320" in text
    assert "  memory.store_replace=0.5" in text  # LongDependency-v0's own setting, not ContinualShift's 0.9


def test_a_saved_config_of_a_preset_is_composed_over_its_base_envs_settings(tmp_path):
    """A hand-written config naming NeedleRecall-Hard-v0 got ContinualShift-v0's memory settings (copy 0.85,
    store_replace 0.9, context_decay 0.95) and NeedleRecall's key lags were lost."""
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  id: NeedleRecall-Hard-v0\nagent:\n  name: memnet\ntrain:\n  episodes: 2\n")
    cfg = from_yaml_file(str(path), [])
    base = load_config(["env=NeedleRecall-v0"])
    assert (cfg.memory.key_lags, cfg.memory["copy"], cfg.memory.store_replace, cfg.memory.context_decay) == \
        (base.memory.key_lags, base.memory["copy"], base.memory.store_replace, base.memory.context_decay)
    assert cfg.env.kwargs.delay == 20 and cfg.train.episodes == 2


def test_agents_run_trains_a_preset_into_its_own_folder_and_resumes_it(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "easy"
    argv = tiny("LongDependency-v0", "lstm", run_dir)
    argv = [a for a in argv if not a.startswith(("env=", "env.kwargs.distances=", "env.kwargs.episode_length="))]
    assert run.main(["env=LongDependency-Easy-v0", *argv]) == 0
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.env.id == "LongDependency-Easy-v0" and saved.env.kwargs.episode_length == 320
    assert list(saved.env.kwargs.distances) == [1, 2, 4, 8, 16, 32, 64]
    assert run.main([f"resume={run_dir}"]) == 0  # (finished: its summary, from its metrics.json)
    assert "this run is finished" in capsys.readouterr().out
    # a generated folder is named after the preset
    assert run.main(["env=LongDependency-Easy-v0", *[a for a in argv if not a.startswith("run_dir=")],
                     f"runs_root={tmp_path / 'root'}"]) == 0
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["LongDependency-Easy-v0"]


def test_a_benchmark_suite_and_a_sweep_take_a_preset(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("seeds: 1\nenvs:\n  NeedleRecall-Hard-v0: {}\nvariants:\n  lstm: {agent: lstm}\n")
    (job,) = plan({}, load_suite(str(suite)), [], tmp_path / "out")
    assert job.env == "NeedleRecall-Hard-v0" and job.facts["env_kwargs"]["delay"] == 20
    assert job.facts["chance"] == pytest.approx(1 / (128 - len(envs.NeedleRecallEnv().special_tokens)))
    from agents.tune_prepare import prepare

    plan_, base, _ = prepare(["env=ContinualShift-Gradual-v0", "sweep=smoke", f"runs_root={tmp_path}"])
    assert base["env"]["id"] == "ContinualShift-Gradual-v0" and base["env"]["kwargs"]["shift"] == "gradual"
    assert "env=ContinualShift-Gradual-v0" in plan_.overrides


def test_the_presets_are_documented_with_every_option_they_set():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for preset in PRESETS:
        line = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{preset}` |"))
        for key in preset_options(preset):
            assert f"`{key}=" in line, (preset, key)
    assert to_yaml(load_config(["env=LongDependency-Hard-v0"])).count("cross_episode_queries: 4") == 1
