"""Which command-line keys change nothing under the rest of a run config, and the one `note:` line that names them
(`agents.run`, `agents.evaluate`, `agents.tune`): accepted, not refused, since one set of overrides may serve every
agent of a comparison, sweep or suite."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig

ENV_OPTION = "env.kwargs."


def inert_note(cfg: DictConfig, keys: Iterable[str], env=None) -> str | None:
    """One `note: ...` line for the keys among `keys` (command-line keys) that change nothing, or None: for
    MemNet the `memory.*` its other memory settings make inert (`memory.config.inert_keys`); for a baseline every
    `memory.*` but memory.reset (the trainer resets a baseline's hidden state or window too) and, for the LSTM and
    GRU, `baseline_model_keys`; for every agent `train_inert_keys`; and with `env` (the run's env, made from cfg's
    options) the `env.kwargs.*` it calls inert (`inert_options`) and memory.reset=task where it has one task (no task
    boundary to clear at). A note, not an error: a sweep or a suite may pass shared overrides."""
    from agents.config import memory_config
    from memory.config import inert_keys

    keys = list(dict.fromkeys(keys))
    named = {}  # key -> its reason, said once (model.dropout: the LSTM's one layer and REINFORCE's step acting)
    if cfg.agent.name != "memnet":
        unused = [k for k in keys if k.startswith("memory.") and k != "memory.reset"]
        reasons = [f"agent={cfg.agent.name} has no memory; {_change_nothing(unused)}"] if unused else []
        named = baseline_model_keys(cfg, keys)
        reasons += dict.fromkeys(named.values())  # (keys of one reason share its phrase)
    else:
        reasons = inert_keys(memory_config(cfg), keys)
    reasons += dict.fromkeys(v for k, v in train_inert_keys(cfg, keys).items() if k not in named)
    options = env.inert_options() if env is not None else {}
    reasons += [f"{key} changes nothing {options[name]}" for key in keys
                if key.startswith(ENV_OPTION) and (name := key[len(ENV_OPTION):]) in options]
    if env is not None and env.num_tasks == 1 and cfg.memory.reset == "task":
        reasons.append(f"memory.reset=task clears nothing: {cfg.env.id} has one task here (as memory.reset=never)")
    return f"note: {'; '.join(reasons)}" if reasons else None


def baseline_model_keys(cfg: DictConfig, keys: Iterable[str]) -> dict[str, str]:
    """The `model.*` among `keys` that change nothing for cfg's agent, each with the phrase that says why: the LSTM
    and GRU have no attention (their hidden size matches the transformer of model.dim, model.layers and
    model.mlp_ratio, whatever its heads), so model.heads and model.window change nothing, and with model.layers=1
    neither does model.dropout (torch drops out between layers). Several keys of one reason share its phrase."""
    from agents.model_config import RECURRENT

    if cfg.agent.name not in RECURRENT:
        return {}
    keys = list(keys)
    attention = [k for k in keys if k in ("model.heads", "model.window")]
    out = dict.fromkeys(attention, f"agent={cfg.agent.name} has no attention; {_change_nothing(attention)}")
    if "model.dropout" in keys and cfg.model.layers == 1:
        out["model.dropout"] = (f"model.dropout changes nothing with model.layers=1 (agent={cfg.agent.name} drops out "
                                "between layers)")
    return out


def train_inert_keys(cfg: DictConfig, keys: Iterable[str]) -> dict[str, str]:
    """The `train.*` among `keys` that change nothing, each with the phrase that says why: REINFORCE's entropy bonus
    and baseline decay under supervised training; and model.dropout under REINFORCE with step acting, which acts
    and learns without dropout (`EpisodeRunner.learn_played`: the actions were drawn without it)."""
    keys = list(keys)
    if cfg.train.mode == "reinforce":
        if "model.dropout" in keys and cfg.train.acting == "step":
            return {"model.dropout": "model.dropout changes nothing with train.mode=reinforce and train.acting=step "
                                     "(step acting acts and learns without dropout)"}
        return {}
    unused = [k for k in keys if k in ("train.entropy_coef", "train.baseline_decay")]
    return dict.fromkeys(unused, f"{_change_nothing(unused)} with train.mode={cfg.train.mode} (REINFORCE's settings)")


def _change_nothing(keys: list[str]) -> str:
    """'a changes nothing' / 'a, b change nothing' (one key: "memory.slots change nothing" was the line)."""
    return f"{', '.join(keys)} {'changes' if len(keys) == 1 else 'change'} nothing"
