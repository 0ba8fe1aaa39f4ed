"""The environment protocol every agent environment follows, and the registry that names them.

An environment is a text game: ``reset(seed)`` starts a deterministic episode and returns the
first :class:`Observation`; ``step(action)`` plays one text action and returns a
:class:`StepResult`. Actions are free text: a bad or inadmissible one never raises, it returns a
"Nothing happens." style observation and the episode goes on.

Add your own environment in a few lines::

    from sdar.envs import Observation, StepResult, register_env

    class Echo:
        name = "echo"
        def reset(self, seed):
            self.target = f"say {seed % 7}"
            return Observation("You hear nothing.", f"Your task is to: {self.target}", [self.target], {})
        def step(self, action):
            won = action.strip() == self.target
            obs = Observation("Well done." if won else "Nothing happens.", self.target, [self.target], {})
            return StepResult(obs, float(won), won, won, {})

    register_env("echo", Echo)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Observation:
    """What the agent sees: the observation text, the task, the admissible actions, extra info.

    ``info`` carries environment-specific fields; the trainer reads ``info["task_type"]`` (for
    per-type success rates) when present.
    """

    text: str
    task: str
    admissible_actions: list[str]
    info: dict = field(default_factory=dict)


@dataclass
class StepResult:
    """The outcome of one action: next observation, reward, whether the episode ended / was won."""

    observation: Observation
    reward: float
    done: bool
    won: bool
    info: dict = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """A text environment. Optional attributes the trainer uses when present:
    ``action_format`` ("action" for ``<action>...</action>``, "search" for
    ``<search>``/``<answer>``) and ``max_steps``."""

    name: str

    def reset(self, seed: int) -> Observation: ...

    def step(self, action: str) -> StepResult: ...


EnvFactory = Callable[..., Env]
_REGISTRY: dict[str, EnvFactory] = {}


def register_env(name: str, factory: EnvFactory, *, overwrite: bool = False) -> None:
    """Makes ``make_env(name, **kwargs)`` call ``factory(**kwargs)``.

    A name may carry a variant after a colon: ``make_env("textworld:cooking")`` calls the factory
    registered as ``"textworld"`` with ``variant="cooking"`` unless ``"textworld:cooking"`` itself
    is registered.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"environment name must be a non-empty string; got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable; got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"an environment named {name!r} is already registered (pass overwrite=True to replace it)"
        )
    _REGISTRY[name] = factory


def available_envs() -> list[str]:
    """Registered environment names (variants such as ``textworld:<kind>`` are listed by prefix)."""
    _load_builtin_envs()
    return sorted(_REGISTRY)


def make_env(name: str, **kwargs) -> Env:
    """Builds the environment registered as ``name`` (see :func:`register_env` for variants)."""
    _load_builtin_envs()
    if name in _REGISTRY:
        return _REGISTRY[name](**kwargs)
    prefix, _, variant = name.partition(":")
    if variant and prefix in _REGISTRY:
        return _REGISTRY[prefix](variant=variant, **kwargs)
    raise ValueError(f"unknown environment {name!r}; registered: {', '.join(available_envs())}")


_BUILTINS_LOADED = False


def _load_builtin_envs() -> None:
    """Registers the environments shipped with sdar (imported lazily: some need optional packages)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import builtin  # noqa: F401  (registers household, textworld, searchqa)
