"""agents/config_compose.py: a compose from the kept composition of the chosen files is Hydra's own compose, its
config and its errors, for any mix of file choices and key overrides; and it is a copy (a change to one config
is not in the next)."""

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from agents.config import flatten_config, load_config
from agents.config_compose import hydra_compose
from agents.env_presets import register_presets
from tests.examples import examples

KEYS = sorted(flatten_config(OmegaConf.to_container(load_config([]), resolve=False))) + [
    "env.kwargs.num_tasks", "env.kwargs.distances", "env.kwargs.foo", "memory.slotz", "train", "nokey"]
CHOICES = ["env=ContinualShift-v0", "env=LongDependency-v0", "env=NeedleRecall-v0", "env=Nope-v0", "agent=gru",
           "agent=transformer", "agent=memnet", "agent=nope", "+sweep=smoke", "~agent", "env@x=LongDependency-v0"]
VALUE = st.sampled_from(["3", "-1", "0.5", "abc", "true", "null", "[1,2]", "[8,16]", "{a: 1}", "'x y'", "1e3", ""])
SETTING = st.builds(lambda prefix, key, value: f"{prefix}{key}={value}", st.sampled_from(["", "+", "++", "~"]),
                    st.sampled_from(KEYS), VALUE)


def hydras_own(overrides: list[str]):
    """Hydra's compose as agents.config did it before the kept composition: the config, or the exception."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="agents.conf", version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception as exc:  # noqa: BLE001  (compared with the other way's)
        return exc


def kept(overrides: list[str]):
    try:
        return hydra_compose(overrides, OverridesParser.create().parse_overrides(overrides))
    except Exception as exc:  # noqa: BLE001
        return exc


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(CHOICES) | SETTING, max_size=5))
@example(["memory.slots=3", "env=NeedleRecall-v0", "env.kwargs.num_tasks=2"])  # a key of the env chosen after it
@example(["+env.kwargs.foo=1", "env.kwargs.foo=2"])  # added, then set: in order
@example(["agent=gru", "~model.dim"])
def test_a_compose_from_the_kept_files_is_hydras_compose(overrides):
    register_presets()
    want, got = hydras_own(overrides), kept(overrides)
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want), (got, want)
    else:
        assert not isinstance(got, Exception), got
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want)
        assert OmegaConf.is_struct(got) and OmegaConf.is_struct(want)


def test_a_composed_config_is_a_copy():
    first = kept(["memory.slots=8"])
    first.memory.slots = 99
    first.train.lr = 7.0
    assert kept(["memory.slots=8"]).memory.slots == 8 and kept([]).train.lr != 7.0


def test_a_config_file_edited_while_the_process_runs_is_read_again():
    """The kept composition is keyed by the files' sizes and modification times: a notebook's or a sweep driver's
    next compose after an edit of agents/conf/ reads the files again, not the composition of before."""
    import os

    from agents.config_compose import _files_composed, conf_folder, files_stamp

    path = conf_folder() / "agent" / "gru.yaml"
    kept(["agent=gru"])
    misses, before, stat = _files_composed.cache_info().misses, files_stamp(), path.stat()
    kept(["agent=gru"])
    assert _files_composed.cache_info().misses == misses  # unchanged files: the kept composition
    try:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # "edited" a second later
        assert files_stamp() != before
        kept(["agent=gru"])
        assert _files_composed.cache_info().misses == misses + 1
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files_stamp() == before


def test_a_hydra_without_the_override_step_composes_whole_each_time(monkeypatch):
    """`ConfigLoaderImpl._apply_overrides_to_config` is not Hydra's public API: where it is missing, every compose is
    Hydra's whole one, with the same config."""
    from agents import config_compose

    overrides = ["env=NeedleRecall-v0", "memory.slots=3", "+env.kwargs.foo=1"]
    monkeypatch.setattr(config_compose, "override_step", lambda: None)
    misses = config_compose._files_composed.cache_info().misses
    got = kept(overrides)
    assert config_compose._files_composed.cache_info().misses == misses  # the kept compositions are not used
    assert OmegaConf.to_container(got) == OmegaConf.to_container(hydras_own(overrides))
    assert got.memory.slots == 3 and got.env.kwargs.foo == 1
