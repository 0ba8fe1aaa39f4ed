"""Household goals: the six task types, their goal text and success check, the splits, and goal
sampling per split.

A goal is a combination (task type, object class, target receptacle class, room); for
``look_at_obj_in_light`` the target is the lamp class. A stable hash holds out ~18% of the
combinations of every task type as ``valid_unseen``; ``train`` and ``valid_seen`` draw from the
rest with different seed streams.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

from .catalog import (
    APPLIANCE,
    CLEANABLE,
    COOLABLE,
    HEATABLE,
    LAMPS,
    LIGHT_INSPECTABLE,
    LOCATION_PRIORS,
    ROOMS,
    TASK_TYPES,
)
from .world import World, article, belongs_in, kind, placement_weights

SPLITS = ("train", "valid_seen", "valid_unseen")
UNSEEN_PER_MILLE = 180  # share of combinations held out as valid_unseen

TASK_OBJECTS: dict[str, tuple[str, ...]] = {
    "pick_and_place": tuple(LOCATION_PRIORS),
    "pick_two": tuple(LOCATION_PRIORS),
    "clean": CLEANABLE,
    "heat": HEATABLE,
    "cool": COOLABLE,
    "look_at_obj_in_light": LIGHT_INSPECTABLE,
}
# the state a task type's appliance gives an object, and the state it takes away
STATE = {"clean": "clean", "heat": "hot", "cool": "cool"}
UNDOES = {"hot": "cool", "cool": "hot"}
LIGHT = "look_at_obj_in_light"


def plural(noun: str) -> str:
    """English plural of an object class: ``knife -> knives``, ``tomato -> tomatoes``, ``mug -> mugs``."""
    if noun.endswith("fe"):
        return noun[:-2] + "ves"
    if noun.endswith(("s", "x", "ch", "sh")) or noun in ("tomato", "potato"):
        return noun + "es"
    return noun + "s"


@dataclass(frozen=True)
class Goal:
    """What an episode asks for; ``target`` is a receptacle class (a lamp class for the light task)."""

    task_type: str
    obj: str
    target: str
    room: str

    @property
    def combination(self) -> tuple[str, str, str, str]:
        return (self.task_type, self.obj, self.target, self.room)

    @property
    def required_count(self) -> int:
        return 2 if self.task_type == "pick_two" else 1

    @property
    def required_state(self) -> str | None:
        return STATE.get(self.task_type)

    @property
    def excluded_start(self) -> str | None:
        """The receptacle class no goal object starts in, so no goal is met before the agent acts."""
        return None if self.task_type == LIGHT else self.target

    @property
    def text(self) -> str:
        """The goal in ALFWorld style, e.g. ``"Your task is to: heat some egg and put it in countertop."``."""
        obj, target = self.obj, self.target
        sentence = {
            "pick_and_place": f"put {article(obj)} {obj} in {target}",
            "pick_two": f"put two {plural(obj)} in {target}",
            "clean": f"put a clean {obj} in {target}",
            "heat": f"heat some {obj} and put it in {target}",
            "cool": f"cool some {obj} and put it in {target}",
            LIGHT: f"look at {obj} under the {target}",
        }[self.task_type]
        return f"Your task is to: {sentence}."

    def info(self) -> dict[str, str]:
        return {"object": self.obj, "target": self.target}

    def satisfied(self, world: World) -> bool:
        """Whether ``world`` meets the goal now."""
        if self.task_type == LIGHT:
            here = world.location
            return (
                world.holding is not None
                and kind(world.holding) == self.obj
                and here is not None
                and kind(here) == self.target
                and here in world.lamps_on
            )
        state = self.required_state
        count = sum(
            1
            for receptacle in world.instances(self.target)
            for obj in world.contents[receptacle]
            if kind(obj) == self.obj and (state is None or state in world.states[obj])
        )
        return count >= self.required_count


def _targets(task_type: str, room: str) -> tuple[str, ...]:
    """Target classes a task type may name in a room (empty when the room lacks its appliance)."""
    present = ROOMS[room]
    if task_type == LIGHT:
        return tuple(lamp for lamp in LAMPS if lamp in present)
    appliance = APPLIANCE.get(task_type)
    if appliance is not None and appliance not in present:
        return ()
    excluded = set(LAMPS) | ({appliance, "garbagecan"} if appliance else set())
    return tuple(r for r in present if r not in excluded)


def _stable_per_mille(combination: tuple[str, ...]) -> int:
    digest = hashlib.sha256("|".join(("household-unseen", *combination)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000


@functools.cache
def all_goals() -> tuple[Goal, ...]:
    """Every solvable combination, in catalog order."""
    goals = []
    for task_type in TASK_TYPES:
        for room in ROOMS:
            for target in _targets(task_type, room):
                exclude = () if task_type == LIGHT else (target,)
                for obj in TASK_OBJECTS[task_type]:
                    if belongs_in(obj, room) and placement_weights(obj, room, exclude):
                        goals.append(Goal(task_type, obj, target, room))
    return tuple(goals)


@functools.cache
def unseen_combinations() -> frozenset[tuple[str, str, str, str]]:
    """The held-out combinations: those whose stable hash falls under the threshold, plus (should a
    task type get none) its lowest-hash combination, so every task type has some."""
    unseen = set()
    for task_type in TASK_TYPES:
        combos = [g.combination for g in all_goals() if g.task_type == task_type]
        combos.sort(key=_stable_per_mille)
        held = [c for c in combos if _stable_per_mille(c) < UNSEEN_PER_MILLE] or combos[:1]
        if len(held) == len(combos):  # keep at least one seen combination too
            held = held[:-1]
        unseen.update(held)
    return frozenset(unseen)


def is_unseen(goal: Goal) -> bool:
    return goal.combination in unseen_combinations()


@functools.cache
def goals_for(split: str, task_type: str) -> tuple[Goal, ...]:
    """The combinations ``split`` samples for ``task_type``."""
    check_split(split)
    want_unseen = split == "valid_unseen"
    return tuple(g for g in all_goals() if g.task_type == task_type and is_unseen(g) == want_unseen)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown household split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def episode_rng(split: str, seed: int) -> random.Random:
    """The episode's random stream, derived from (split, seed) so the splits never share one."""
    digest = hashlib.sha256(f"household-episode|{split}|{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_goal(rng: random.Random, split: str) -> Goal:
    """A task type uniformly, then one of the split's combinations for it uniformly."""
    return rng.choice(goals_for(split, rng.choice(TASK_TYPES)))
