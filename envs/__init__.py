"""memstream environments: token streams that test memory, registered with Gymnasium on `import envs`.

    import gymnasium as gym, envs
    env = gym.make("LongDependency-v0")
    venv = gym.make_vec("NeedleRecall-v0", num_envs=64, vectorization_mode="vector_entry_point")

Each id has a scalar class (`entry_point`) and a native vector class (`vector_entry_point`) over one shared
batched generator; see `envs.stream` for the conventions every env follows.
"""

from gymnasium.envs.registration import register, registry

from envs.continual_shift import ContinualShiftEnv, ContinualShiftVectorEnv
from envs.long_dependency import LongDependencyEnv, LongDependencyVectorEnv
from envs.needle_recall import NeedleRecallEnv, NeedleRecallVectorEnv

# id -> (module class prefix, preset kwargs). Presets are small registered variants of the base envs.
ENV_IDS = {
    "LongDependency-v0": ("long_dependency:LongDependency", {}),
    "LongDependency-Easy-v0": ("long_dependency:LongDependency",
                               {"distances": (1, 2, 4, 8, 16, 32, 64), "episode_length": 320}),
    "LongDependency-Hard-v0": ("long_dependency:LongDependency",
                               {"distances": tuple(2**i for i in range(13)), "episode_length": 4608,
                                "cross_episode_queries": 4}),
    "ContinualShift-v0": ("continual_shift:ContinualShift", {}),
    "ContinualShift-Gradual-v0": ("continual_shift:ContinualShift", {"shift": "gradual", "revisit": True}),
    "NeedleRecall-v0": ("needle_recall:NeedleRecall", {}),
    "NeedleRecall-Hard-v0": ("needle_recall:NeedleRecall",
                             {"delay": 20, "facts_per_episode": 8, "haystack_length": 512}),
}

for _env_id, (_target, _kwargs) in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=f"envs.{_target}Env", vector_entry_point=f"envs.{_target}VectorEnv",
                 kwargs=_kwargs)

__all__ = ["ENV_IDS", "ContinualShiftEnv", "ContinualShiftVectorEnv", "LongDependencyEnv",
           "LongDependencyVectorEnv", "NeedleRecallEnv", "NeedleRecallVectorEnv"]
