"""The `note:` line of an evaluation whose env options replay a run's training as another task schedule
(ContinualShift's episodes_per_task, shift, shift_window): no evaluated episode changes and its accuracy is the run's,
but each query's distance is measured back through the changed history, so `accuracy_by_distance` holds other queries
in its buckets (or none) than the run's `metrics.json` (README "Re-evaluating a checkpoint")."""

from __future__ import annotations

SCHEDULE_OPTIONS = ("episodes_per_task", "shift", "shift_window")  # ContinualShift's that an evaluation may change


def schedule_note(own_env: dict, env_kwargs: dict | None, venv) -> str | None:
    """The note where `venv` (the evaluated env, after the replay of the run's training resets) generated any of the
    replayed training episodes otherwise than the run's own env (`own_env`: its saved config's `env`) does; None
    where they are the same episodes (no schedule option given, or one that changes none of them: shift_window under
    shift=abrupt, an episodes_per_task past the replayed episodes)."""
    from agents.episodes import make_vector_env

    trained, own_kwargs = int(getattr(venv, "episode_index", 0)), dict(own_env["kwargs"])  # (episodes replayed)
    changed = [k for k in SCHEDULE_OPTIONS if k in (env_kwargs or {}) and env_kwargs[k] != own_kwargs.get(k)]
    if not changed or not trained or not hasattr(venv, "train_plan"):
        return None
    own = make_vector_env(own_env["id"], 1, own_kwargs)
    try:
        if all(own.train_plan(e) == venv.train_plan(e) for e in range(trained)):
            return None
    finally:
        own.close()
    from agents.run_config import override_spelling

    shown = " ".join(f"env.kwargs.{k}={override_spelling(env_kwargs[k])}" for k in changed)
    return (f"note: {shown} replays the run's {trained} training episode{'s' * (trained != 1)} as another task "
            "schedule than it trained on (no evaluated episode changes): accuracy_by_distance measures each query's "
            "distance back through that schedule, not the run's: its buckets are not comparable with metrics.json's")
