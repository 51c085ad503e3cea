"""What a command that starts runs elsewhere checks before any of them starts, each failure one ConfigError line:
the env options (as the env builds them) and the run's model with its memory (as the trainer makes it). Shared by
`agents.benchmark` (every (env, variant) of a suite and its probes), `benchmarks/agents.py` (every row) and
`agents.tune` (the swept env options): without them a bad value or a size past this machine's memory failed inside
each run, in its log, after the runs before it had spent their minutes."""

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


def model_fits(cfg, vocab_size: int, what: str = "its model", fix: str = "lower them") -> None:
    """The trainer's device check and model, with the memory for train.lanes lanes, made and dropped: device=cuda
    without CUDA is its ConfigError, sizes that do not fit `agents.allocation.does_not_fit`'s line about `what`,
    ending in `fix`, and a cache's cold tier past its disk's free space the cache's own line after `what` (it was
    a traceback: `ColdTierError` is an OSError). The model is made on the CPU (where the store and cache live on
    any device): on a GPU it held a CUDA context in the checking process all along, beside the runs'.

    The first call imports torch (~1 s, after the command's startup guard): Ctrl+C or SIGTERM waits for those imports
    to end (`interrupts_held`), then raises KeyboardInterrupt. Raised inside torch's import, it could land in a
    C++ callback and abort the process (`agents.benchmark`: exit 134 and `terminate called after throwing an
    instance of 'pybind11::error_already_set'`, instead of its `interrupted before any run started` line)."""
    from agents.interrupts import interrupts_held

    with interrupts_held():
        import torch

        from agents.allocation import ALLOCATION_ERRORS, allocation_failure, does_not_fit
        from agents.models import build_agent
        from agents.trainer import resolve_device
        from memory.cache_cold_dirs import ColdTierError

    resolve_device(cfg.device)
    try:
        build_agent(cfg, vocab_size, torch.device("cpu"))  # dropped at once
    except ColdTierError as exc:  # (the runs make theirs in the same TMPDIR: each would fail on it, in its log)
        raise ConfigError(f"{what}: {exc}") from None
    except ALLOCATION_ERRORS as exc:
        if not allocation_failure(exc):  # any other error is a bug: keep its traceback
            raise
        raise ConfigError(does_not_fit(cfg, exc, what, fix)) from None
