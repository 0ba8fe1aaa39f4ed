"""The household world's state (receptacles, objects, where the agent is, what it holds) and its
deterministic generation from a random stream.

Names are ``"<class> <number>"`` for receptacles ("cabinet 3") and objects ("apple 1"). Objects are
placed by the catalog's location priors restricted to the room; openable receptacles start closed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .catalog import LAMPS, LOCATION_PRIORS, RECEPTACLES, ROOMS

# an object class belongs in a room when its location priors put at least this much weight there
ROOM_AFFINITY = 0.5
# distractor object classes per room (beyond the goal's class), and instances per distractor class
DISTRACTOR_CLASSES = (4, 8)
DISTRACTOR_INSTANCES = (1, 2)


def kind(name: str) -> str:
    """The class of a numbered name: ``kind("cabinet 3") == "cabinet"``."""
    return name.rsplit(" ", 1)[0]


def article(word: str) -> str:
    """``"an"`` before a vowel sound, ``"a"`` otherwise."""
    return "an" if word[:1] in "aeiou" else "a"


def with_article(name: str) -> str:
    return f"{article(name)} {name}"


def enumerate_names(names: list[str], empty: str = "nothing") -> str:
    """``"an apple 1, a mug 2, and a cup 1"`` (``empty`` when there are none)."""
    items = [with_article(name) for name in names]
    if not items:
        return empty
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def placement_weights(obj_class: str, room: str, exclude: tuple[str, ...] = ()) -> dict[str, float]:
    """``obj_class``'s location prior over the receptacle classes in ``room``, minus ``exclude``."""
    present = ROOMS[room]
    return {r: w for r, w in LOCATION_PRIORS[obj_class].items() if r in present and r not in exclude}


def belongs_in(obj_class: str, room: str) -> bool:
    """Whether ``obj_class`` is at home in ``room`` (enough prior weight on the room's receptacles)."""
    return sum(placement_weights(obj_class, room).values()) >= ROOM_AFFINITY


@dataclass
class World:
    """The full true state of one episode. Mutated only through :meth:`take` / :meth:`put`."""

    room: str
    receptacles: list[str]
    contents: dict[str, list[str]]
    closed: dict[str, bool]  # openable receptacle -> whether it is closed now
    states: dict[str, list[str]] = field(default_factory=dict)  # object -> sorted states ("clean", ...)
    location: str | None = None  # None: the middle of the room
    holding: str | None = None
    lamps_on: list[str] = field(default_factory=list)
    where: dict[str, str] = field(init=False)  # object -> the receptacle it is in/on (not the held one)

    def __post_init__(self) -> None:
        self.where = {obj: r for r, objs in self.contents.items() for obj in objs}
        for obj in self.where:
            self.states.setdefault(obj, [])

    def is_openable(self, receptacle: str) -> bool:
        return receptacle in self.closed

    def is_closed(self, receptacle: str) -> bool:
        return self.closed.get(receptacle, False)

    @staticmethod
    def is_lamp(receptacle: str) -> bool:
        return kind(receptacle) in LAMPS

    def is_accessible(self, receptacle: str) -> bool:
        """Whether objects in/on ``receptacle`` can be seen, taken and put down (open, not a lamp)."""
        return not self.is_closed(receptacle) and not self.is_lamp(receptacle)

    def objects(self) -> list[str]:
        """Every object, held one included, in a stable order."""
        held = [self.holding] if self.holding else []
        return held + [obj for r in self.receptacles for obj in self.contents[r]]

    def instances(self, receptacle_class: str) -> list[str]:
        return [r for r in self.receptacles if kind(r) == receptacle_class]

    def take(self, obj: str) -> None:
        receptacle = self.where.pop(obj)
        self.contents[receptacle].remove(obj)
        self.holding = obj

    def put(self, receptacle: str) -> None:
        obj, self.holding = self.holding, None
        self.contents[receptacle].append(obj)
        self.where[obj] = receptacle

    def add_state(self, obj: str, state: str, *, drop: str | None = None) -> None:
        states = [s for s in self.states[obj] if s not in (state, drop)]
        self.states[obj] = sorted([*states, state])


def generate_world(
    rng: random.Random,
    room: str,
    goal_class: str,
    goal_count: int,
    forbidden: str | None,
    max_instances: int | None = None,
) -> World:
    """A random room layout holding ``goal_count`` instances of ``goal_class`` (none of them in a
    ``forbidden`` receptacle class) among distractors. Deterministic given the state of ``rng``.
    ``max_instances`` caps the instances of each receptacle class (a smaller world; the random
    draws are the same, so layouts differ only by the dropped instances)."""
    receptacles: list[str] = []
    for cls in ROOMS[room]:
        low, high = RECEPTACLES[cls][0]
        count = rng.randint(low, high)
        if max_instances is not None:
            count = min(count, max_instances)
        receptacles += [f"{cls} {i}" for i in range(1, count + 1)]
    contents: dict[str, list[str]] = {r: [] for r in receptacles}
    closed = {r: True for r in receptacles if RECEPTACLES[kind(r)][1]}

    candidates = [c for c in LOCATION_PRIORS if c != goal_class and belongs_in(c, room)]
    distractors = rng.sample(candidates, min(len(candidates), rng.randint(*DISTRACTOR_CLASSES)))
    plan = [(goal_class, goal_count, (forbidden,) if forbidden else ())]
    plan += [(cls, rng.randint(*DISTRACTOR_INSTANCES), ()) for cls in distractors]
    for cls, count, exclude in plan:
        weights = placement_weights(cls, room, exclude)
        if not weights:
            raise ValueError(f"no place for {cls!r} in a {room} without {exclude}")
        classes, probabilities = list(weights), list(weights.values())
        for number in range(1, count + 1):
            receptacle_class = rng.choices(classes, probabilities)[0]
            receptacle = rng.choice([r for r in receptacles if kind(r) == receptacle_class])
            contents[receptacle].append(f"{cls} {number}")
    for objs in contents.values():
        rng.shuffle(objs)
    return World(room=room, receptacles=receptacles, contents=contents, closed=closed)
