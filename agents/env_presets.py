"""The registered env presets (`envs.ENV_IDS`: LongDependency-Easy-v0, ...) as choices of the `env` config group.

A preset is its base env's `agents/conf/env/<base>.yaml` (the tuned memory and training settings) with `env.id` the
preset and `env.kwargs` updated with the preset's options, stored in Hydra's ConfigStore under the preset's id. So
`python -m agents.run env=LongDependency-Easy-v0` runs the preset with LongDependency-v0's settings and options, the
preset's options over them, and its config.yaml records the options the env ran with. Without this a preset was
"unknown" to agents.run, agents.tune and agents.benchmark, and a saved config naming one was composed over
ContinualShift-v0's settings. The presets' options stay in one place, the registry (`envs/__init__.py`).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from omegaconf import OmegaConf


@cache
def preset_bases() -> dict[str, str]:
    """{preset id: base id}: a registered id with options of its own, and the id of the same class without any."""
    from envs import ENV_IDS

    bases = {target: env_id for env_id, (target, kwargs) in ENV_IDS.items() if not kwargs}
    return {env_id: bases[target] for env_id, (target, kwargs) in ENV_IDS.items() if kwargs}


def preset_options(env_id: str) -> dict:
    """A preset's own options as config values (tuples as lists); {} for a base env."""
    from envs import ENV_IDS

    options = ENV_IDS[env_id][1] if env_id in preset_bases() else {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


@cache
def register_presets() -> None:
    """Store each preset's config in Hydra's ConfigStore, group `env` (once per process)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for preset, base in preset_bases().items():
        node = OmegaConf.load(files("agents.conf") / "env" / f"{base}.yaml")
        node.env.id = preset
        node.env.kwargs = OmegaConf.merge(node.env.kwargs, preset_options(preset))
        store.store(group="env", name=preset, node=node, package="_global_")
