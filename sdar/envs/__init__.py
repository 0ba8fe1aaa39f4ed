"""Agent environments: the protocol, the registry, a parallel pool, and the built-in environments
(``household`` embedded, ``textworld:<kind>``, ``searchqa``)."""

from .base import Env, Observation, StepResult, available_envs, make_env, register_env
from .pool import EnvPool, group_seeds

__all__ = [
    "Env",
    "EnvPool",
    "Observation",
    "StepResult",
    "available_envs",
    "group_seeds",
    "make_env",
    "register_env",
]
