"""Stepping many environments at once, for group rollouts.

GRPO compares G rollouts of the same task: :func:`group_seeds` lays out B tasks x G copies with
a shared seed per group, and :class:`EnvPool` resets and steps them in parallel threads (the
environments run C code or wait on I/O often enough for threads to pay; a pure-Python env simply
runs at its own speed). Finished episodes are skipped until the next reset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .base import Env, Observation, StepResult, make_env


def group_seeds(task_seeds: Sequence[int], group_size: int) -> list[int]:
    """[s0]*G + [s1]*G + ...: G copies of each task's seed, group members adjacent."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    return [seed for seed in task_seeds for _ in range(group_size)]


class EnvPool:
    """``size`` environments stepped together.

    Args:
        env: an environment name for :func:`make_env`, or a zero-argument factory.
        size: number of environments.
        workers: threads (default: min(size, 8)); 0 steps them one after another.
        **env_kwargs: passed to :func:`make_env` when ``env`` is a name.
    """

    def __init__(self, env: str | Callable[[], Env], size: int, *, workers: int | None = None, **env_kwargs):
        if size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        factory = (lambda: make_env(env, **env_kwargs)) if isinstance(env, str) else env
        self.envs: list[Env] = [factory() for _ in range(size)]
        self.done = [True] * size
        workers = min(size, 8) if workers is None else workers
        self._executor = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None

    def __len__(self) -> int:
        return len(self.envs)

    def _map(self, fn, items):
        if self._executor is None:
            return [fn(*item) for item in items]
        return list(self._executor.map(lambda item: fn(*item), items))

    def reset(self, seeds: Sequence[int]) -> list[Observation]:
        """Resets every environment; ``seeds[i]`` seeds environment i."""
        if len(seeds) != len(self.envs):
            raise ValueError(f"need {len(self.envs)} seeds; got {len(seeds)}")
        observations = self._map(
            lambda env, seed: env.reset(int(seed)), list(zip(self.envs, seeds, strict=True))
        )
        self.done = [False] * len(self.envs)
        return observations

    def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
        """Steps every unfinished environment with its action; finished ones (or a None action) give None."""
        if len(actions) != len(self.envs):
            raise ValueError(f"need {len(self.envs)} actions; got {len(actions)}")

        def step_one(index, action):
            if self.done[index] or action is None:
                return None
            result = self.envs[index].step(action)
            if result.done:
                self.done[index] = True
            return result

        return self._map(step_one, list(enumerate(actions)))

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for env in self.envs:
            close = getattr(env, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
