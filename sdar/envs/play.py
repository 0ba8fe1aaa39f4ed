"""Play any registered environment in the terminal, or watch the household expert play.

    python -m sdar.envs.play household --seed 3            # you type the actions
    python -m sdar.envs.play household --seed 3 --expert   # the expert planner plays

Type an action, or the number of one of the listed admissible actions; ``quit`` (or end of input,
or Ctrl-C) leaves.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from collections.abc import Callable

from .base import Env, Observation, make_env

QUIT = ("quit", "exit", "q")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdar.envs.play", description=__doc__.split("\n")[0])
    parser.add_argument("env", help="a registered environment name, e.g. household")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    parser.add_argument("--split", help="split, for environments that take one (household: train, ...)")
    parser.add_argument("--max-steps", type=int, help="step limit, for environments that take one")
    parser.add_argument("--expert", action="store_true", help="watch the household expert play")
    parser.add_argument("--hide-actions", action="store_true", help="do not list the admissible actions")
    return parser


def _show(observation: Observation, hide_actions: bool, width: int) -> None:
    print(textwrap.fill(observation.text, width=width))
    if observation.admissible_actions and not hide_actions:
        listed = "   ".join(f"[{i}] {a}" for i, a in enumerate(observation.admissible_actions, 1))
        print(textwrap.fill(f"Actions: {listed}", width=width, subsequent_indent="  "))


def _read_action(observation: Observation) -> str | None:
    """The next typed action (a number picks a listed action); None at end of input or on quit."""
    try:
        line = input("> ")
    except (EOFError, RuntimeError):  # RuntimeError: no stdin at all
        print()
        return None
    if not sys.stdin.isatty():  # echo scripted input so the transcript reads like a session
        print(line)
    text = line.strip()
    if text.lower() in QUIT:
        return None
    actions = observation.admissible_actions
    if text.isdigit() and 1 <= int(text) <= len(actions):
        return actions[int(text) - 1]
    return text


def play(env: Env, seed: int, policy: Callable[[], str] | None = None, hide_actions: bool = False) -> int:
    """Plays one episode of ``env``; ``policy`` (no arguments) picks actions instead of the keyboard.
    Returns the process exit status (0)."""
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    observation = env.reset(seed)
    print(observation.task)
    _show(observation, hide_actions, width)
    task = observation.task
    while True:
        if policy is not None:
            action = policy()
            print(f"> {action}")
        else:
            action = _read_action(observation)
            if action is None:
                print("Bye.")
                return 0
        result = env.step(action)
        observation = result.observation
        if observation.task != task:
            task = observation.task
            print(task)
        _show(observation, hide_actions or result.done, width)
        if result.done:
            print(f"Episode over: {'won' if result.won else 'lost'} (reward {result.reward:g}).")
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in (("split", args.split), ("max_steps", args.max_steps)) if v is not None}
    try:
        env = make_env(args.env, **kwargs)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    policy = None
    if args.expert:
        from .household import HouseholdEnv, expert_policy

        if not isinstance(env, HouseholdEnv):
            parser.error("--expert is only available for the household environment")
        policy = lambda: expert_policy(env)  # noqa: E731
    try:
        return play(env, args.seed, policy, args.hide_actions)
    except ValueError as error:  # e.g. a seed the environment rejects
        parser.error(str(error))
    except KeyboardInterrupt:
        print("\nBye.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
