"""What a command that starts runs elsewhere checks before any of them starts, each failure one ConfigError line:
the env options, as the env builds them. Shared by `agents.benchmark` (every (env, variant) of a suite and its
probes), `benchmarks/agents.py` (every row) and `agents.tune` (the swept env options): without it a bad value failed
inside each run, in its log, after the runs before it had spent their minutes."""

from __future__ import annotations

from agents.config import ConfigError


def env_source(env_id: str, kwargs: dict):
    """The env's stream source (numpy only) for these options: checks them, and knows the answer space."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import envs  # noqa: F401  (registers the ids)
    from envs.token_env import build_source

    try:
        spec = gym.spec(env_id)
        return build_source(load_env_creator(spec.vector_entry_point).source_cls, dict(spec.kwargs) | kwargs)
    except (gym.error.Error, TypeError, ValueError) as exc:
        message = str(exc).splitlines()[0]
        raise ConfigError(message if env_id in message else f"{env_id}: {message}") from None

