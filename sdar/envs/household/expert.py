"""An expert planner for HouseholdEnv: it returns the next admissible action and wins every task.

It plays like a sensible agent that knows the location priors: it searches the receptacles where
the goal's object class is most likely (opening closed ones), remembers what it has seen, takes the
object, uses the appliance (microwave / fridge / sinkbasin) or lamp the task needs, and puts the
object in the target receptacle (opening it first). It reads the env's true state for what it has
seen, and when the steps left get tight it goes straight to a known object location (privileged
knowledge), so it never runs out of steps from a fresh episode.
"""

from __future__ import annotations

import weakref

from .catalog import APPLIANCE
from .env import HouseholdEnv
from .tasks import LIGHT, Goal
from .world import World, kind, placement_weights

# the most steps any one remaining goal object can need when going straight for it:
# go, open, take, go to appliance, use it, go to target, open, move
_STEPS_PER_OBJECT = 8
_SLACK = 4  # putting down a wrong held object (go, open, move) and a spare step


class ExpertPlanner:
    """Call it (or :meth:`act`) with a reset :class:`HouseholdEnv` to get the next action.

    One planner follows one episode at a time; it notices a new episode (a new ``env.world``) and
    forgets its memory of seen receptacles.
    """

    def __init__(self) -> None:
        self._world: World | None = None
        self._seen: set[str] = set()
        self._direct = False

    def __call__(self, env: HouseholdEnv) -> str:
        return self.act(env)

    def act(self, env: HouseholdEnv) -> str:
        """The next action for ``env``'s current state (always one of its admissible actions)."""
        world, goal = env.world, env.goal
        if world is None or goal is None:
            raise RuntimeError("reset the environment before asking the expert for an action")
        if world is not self._world:
            self._world, self._seen, self._direct = world, set(), False
        if world.location is not None and world.is_accessible(world.location):
            self._seen.add(world.location)
        if env.max_steps - env.steps <= self._worst_case_steps(world, goal):
            self._direct = True
        held = world.holding
        if held is not None:
            return self._deliver(world, goal, held) if kind(held) == goal.obj else self._put_down(world)
        return self._fetch(world, goal)

    # -- planning ----------------------------------------------------------------------------------

    @staticmethod
    def _worst_case_steps(world: World, goal: Goal) -> int:
        if goal.task_type == LIGHT:
            return _STEPS_PER_OBJECT + _SLACK
        placed = sum(
            1 for r in world.instances(goal.target) for obj in world.contents[r] if kind(obj) == goal.obj
        )
        return _STEPS_PER_OBJECT * max(goal.required_count - placed, 1) + _SLACK

    def _fetch(self, world: World, goal: Goal) -> str:
        """Not holding anything: take a wanted object here, or open / go to where one is or may be."""
        here = world.location
        pick_two = goal.task_type == "pick_two"
        wanted = [  # goal objects not yet in place (for pick_two: the ones outside the target)
            obj
            for obj in world.objects()
            if kind(obj) == goal.obj and not (pick_two and kind(world.where[obj]) == goal.target)
        ]
        if here is not None and world.is_accessible(here):
            for obj in wanted:
                if world.where[obj] == here:
                    return f"take {obj} from {here}"
        known = [obj for obj in wanted if self._direct or world.where[obj] in self._seen]
        search = self._search_order(world, goal)
        if here is not None and world.is_closed(here):
            if here in search or any(world.where[obj] == here for obj in known):
                return f"open {here}"
        if known:
            return f"go to {world.where[known[0]]}"
        if search:
            return f"go to {search[0]}"
        return f"go to {world.where[wanted[0]]}"  # nothing left to search: fall back on the true state

    def _search_order(self, world: World, goal: Goal) -> list[str]:
        """Unseen receptacles where the goal's object class may be, most likely class first. The
        target class is skipped: a task to put something there implies it is elsewhere."""
        exclude = () if goal.excluded_start is None else (goal.excluded_start,)
        weights = placement_weights(goal.obj, world.room, exclude)
        candidates = [r for r in world.receptacles if kind(r) in weights and r not in self._seen]
        return sorted(candidates, key=lambda r: -weights[kind(r)])  # stable: room order within a class

    def _deliver(self, world: World, goal: Goal, held: str) -> str:
        """Holding a goal object: process it if the task needs a state, then place it (or light it)."""
        here = world.location
        if goal.task_type == LIGHT:
            lamp = self._nearest(world, goal.target)
            return f"use {lamp}" if here == lamp else f"go to {lamp}"
        state = goal.required_state
        if state is not None and state not in world.states[held]:
            appliance = self._nearest(world, APPLIANCE[goal.task_type])
            if here != appliance:
                return f"go to {appliance}"
            return f"{goal.task_type} {held} with {appliance}"
        target = self._nearest(world, goal.target)
        if here != target:
            return f"go to {target}"
        return f"open {target}" if world.is_closed(target) else f"move {held} to {target}"

    def _put_down(self, world: World) -> str:
        """Holding something the goal does not need: put it down here, or at the first open surface."""
        here = world.location
        if here is not None and world.is_accessible(here):
            return f"move {world.holding} to {here}"
        if here is not None and world.is_openable(here):
            return f"open {here}"
        surface = next(r for r in world.receptacles if not world.is_openable(r) and not world.is_lamp(r))
        return f"go to {surface}"

    @staticmethod
    def _nearest(world: World, receptacle_class: str) -> str:
        """The current location if it is of that class, else the class's first instance."""
        here = world.location
        if here is not None and kind(here) == receptacle_class:
            return here
        return world.instances(receptacle_class)[0]


_PLANNERS: weakref.WeakKeyDictionary[HouseholdEnv, ExpertPlanner] = weakref.WeakKeyDictionary()


def expert_policy(env: HouseholdEnv) -> str:
    """The expert's next action for ``env`` (one planner is kept per environment)."""
    planner = _PLANNERS.get(env)
    if planner is None:
        planner = _PLANNERS[env] = ExpertPlanner()
    return planner.act(env)
