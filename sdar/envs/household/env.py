"""HouseholdEnv: the embedded ALFWorld-like text world, its command grammar and admissible actions.

Commands: ``go to {recep}``, ``open {recep}``, ``close {recep}``, ``take {obj} from {recep}``,
``move {obj} to {recep}``, ``heat {obj} with microwave 1``, ``cool {obj} with fridge 1``,
``clean {obj} with sinkbasin 1``, ``use {lamp}``, ``examine {recep or obj}``, ``inventory``,
``look``. Anything else (or anything not admissible now) gives "Nothing happens." and uses a step.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from functools import partial

from ..base import Observation, StepResult
from .catalog import APPLIANCE
from .tasks import STATE, UNDOES, Goal, check_split, episode_rng, sample_goal
from .world import World, enumerate_names, generate_world, kind, with_article

NOTHING = "Nothing happens."
MAX_ACTION_CHARS = 200  # longer actions are not commands; they get "Nothing happens."
_PUT = re.compile(r"put (.+?) (?:in/on|into|onto|in|on) (.+)")
_GOAL_INSTANCES = {"pick_two": (2, 3)}  # instances of the goal's class placed in the room
_DEFAULT_GOAL_INSTANCES = (1, 2)


def normalize_action(action: object) -> str:
    """Lower case, single spaces, no surrounding quotes or final period; ``put X in/on Y`` reads as
    ``move X to Y``. Non-strings and overlong strings become ``""`` (never a command)."""
    if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS:
        return ""
    text = " ".join(action.lower().split()).strip(" .!?\"'`")
    match = _PUT.fullmatch(text)
    return f"move {match[1]} to {match[2]}" if match else text


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"household seed must be a non-negative integer; got {seed!r}")
    return int(seed)


class HouseholdEnv:
    """An ALFWorld-like household episode per ``reset(seed)``, deterministic by (split, seed).

    Args:
        split: "train", "valid_seen" or "valid_unseen" (held-out goal combinations).
        max_steps: the episode ends, lost, after this many actions.
        max_instances: cap on the instances of each receptacle class (None: the catalog's ranges);
            1 makes a small world in which every receptacle is "<class> 1".

    The true state is public for the expert planner: ``world`` (a :class:`World`), ``goal`` (a
    :class:`Goal`), ``steps`` (actions taken), ``done`` and ``won``.
    """

    name = "household"
    action_format = "action"

    def __init__(self, split: str = "train", max_steps: int = 50, max_instances: int | None = None):
        if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
        if max_instances is not None and (isinstance(max_instances, bool) or int(max_instances) < 1):
            raise ValueError(f"max_instances must be None or a positive integer; got {max_instances!r}")
        self.max_instances = None if max_instances is None else int(max_instances)
        self.split = check_split(split)
        self.max_steps = int(max_steps)
        self.world: World | None = None
        self.goal: Goal | None = None
        self.seed: int | None = None
        self.steps = 0
        self.done = False
        self.won = False
        self._commands: dict[str, Callable[[], str]] = {}

    # -- episode -----------------------------------------------------------------------------------

    def reset(self, seed: int) -> Observation:
        """Starts the episode of ``seed``: a room, a goal, a layout; the agent in the middle of the room."""
        self.seed = check_seed(seed)
        rng = episode_rng(self.split, self.seed)
        self.goal = sample_goal(rng, self.split)
        low, high = _GOAL_INSTANCES.get(self.goal.task_type, _DEFAULT_GOAL_INSTANCES)
        count = rng.randint(low, high)
        self.world = generate_world(
            rng, self.goal.room, self.goal.obj, count, self.goal.excluded_start, self.max_instances
        )
        self.steps, self.done, self.won = 0, False, False
        self._commands = self._admissible()
        return self._observation(self._overview())

    def step(self, action: str) -> StepResult:
        """Plays one text action; a bad or inadmissible one is "Nothing happens." and still a step."""
        if self.world is None or self.goal is None:
            raise RuntimeError("HouseholdEnv.step() called before reset(seed)")
        if self.done:
            text = f"{NOTHING} The episode is over; reset(seed) starts another."
            return StepResult(self._observation(text), 0.0, True, self.won, {"valid_action": False})
        handler = self._commands.get(normalize_action(action))
        text = handler() if handler is not None else NOTHING
        self.steps += 1
        self.won = self.goal.satisfied(self.world)
        self.done = self.won or self.steps >= self.max_steps
        self._commands = self._admissible()
        info = {"valid_action": handler is not None, "won": self.won}
        return StepResult(self._observation(text), float(self.won), self.done, self.won, info)

    @property
    def admissible_actions(self) -> list[str]:
        """The commands valid now, in a fixed order (none once the episode is over)."""
        return [] if self.done else list(self._commands)

    def _observation(self, text: str) -> Observation:
        info = {
            "task_type": self.goal.task_type,
            "split": self.split,
            "room": self.goal.room,
            "goal": self.goal.info(),
            "step": self.steps,
            "seed": self.seed,
        }
        return Observation(text, self.goal.text, self.admissible_actions, info)

    # -- what can be done now ----------------------------------------------------------------------

    def _admissible(self) -> dict[str, Callable[[], str]]:
        """Command text -> the handler that plays it, for every command valid in the current state."""
        w, here, held = self.world, self.world.location, self.world.holding
        commands: dict[str, Callable[[], str]] = {
            f"go to {r}": partial(self._go, r) for r in w.receptacles if r != here
        }
        if here is not None:
            if w.is_openable(here):
                if w.is_closed(here):
                    commands[f"open {here}"] = partial(self._open, here)
                else:
                    commands[f"close {here}"] = partial(self._close, here)
            if w.is_accessible(here):
                if held is None:
                    for obj in w.contents[here]:
                        commands[f"take {obj} from {here}"] = partial(self._take, obj, here)
                else:
                    commands[f"move {held} to {here}"] = partial(self._move, here)
            for verb, appliance in APPLIANCE.items():
                if held is not None and kind(here) == appliance:
                    commands[f"{verb} {held} with {here}"] = partial(self._process, verb, here)
            if w.is_lamp(here):
                commands[f"use {here}"] = partial(self._use, here)
            commands[f"examine {here}"] = partial(self._describe, here)
        if held is not None:
            commands[f"examine {held}"] = self._examine_held
        commands["inventory"] = self._inventory
        commands["look"] = self._look
        return commands

    # -- command handlers (called only when admissible) ---------------------------------------------

    def _overview(self) -> str:
        seen = enumerate_names(self.world.receptacles)
        return f"You are in the middle of a room. Looking quickly around you, you see {seen}."

    def _describe(self, receptacle: str) -> str:
        w = self.world
        if w.is_lamp(receptacle):
            return f"The {receptacle} is {'on' if receptacle in w.lamps_on else 'off'}."
        if w.is_openable(receptacle):
            if w.is_closed(receptacle):
                return f"The {receptacle} is closed."
            return f"The {receptacle} is open. In it, you see {enumerate_names(w.contents[receptacle])}."
        return f"On the {receptacle}, you see {enumerate_names(w.contents[receptacle])}."

    def _go(self, receptacle: str) -> str:
        self.world.location = receptacle
        return f"You arrive at {receptacle}. {self._describe(receptacle)}"

    def _open(self, receptacle: str) -> str:
        self.world.closed[receptacle] = False
        return f"You open the {receptacle}. {self._describe(receptacle)}"

    def _close(self, receptacle: str) -> str:
        self.world.closed[receptacle] = True
        return f"You close the {receptacle}."

    def _take(self, obj: str, receptacle: str) -> str:
        self.world.take(obj)
        return f"You pick up the {obj} from the {receptacle}."

    def _move(self, receptacle: str) -> str:
        obj = self.world.holding
        self.world.put(receptacle)
        return f"You move the {obj} to the {receptacle}."

    def _process(self, verb: str, appliance: str) -> str:
        obj, state = self.world.holding, STATE[verb]
        self.world.add_state(obj, state, drop=UNDOES.get(state))
        return f"You {verb} the {obj} using the {appliance}."

    def _use(self, lamp: str) -> str:
        lamps_on = self.world.lamps_on
        if lamp in lamps_on:
            lamps_on.remove(lamp)
            return f"You turn off the {lamp}."
        lamps_on.append(lamp)
        return f"You turn on the {lamp}."

    def _examine_held(self) -> str:
        obj = self.world.holding
        states = self.world.states[obj]
        if not states:
            return f"There's nothing special about {obj}."
        return f"This is {with_article(', '.join(states))} {obj}."

    def _inventory(self) -> str:
        held = self.world.holding
        return f"You are carrying: {with_article(held)}." if held else "You are not carrying anything."

    def _look(self) -> str:
        here = self.world.location
        if here is None:
            return self._overview()
        return f"You are facing the {here}. {self._describe(here)}"
