"""Dev check: the household skill texts agree with the environment's catalog.

The household skills quote the catalog's location priors (``sdar.envs.household.catalog``): a line
``- <object>: <receptacle> (NN%), ...`` lists where an object is and how often. In an entry whose
title names a room ("... in a bedroom"), the percentages are the priors restricted to the
receptacles that room has, renormalised; elsewhere they are the global priors. Lines
``- <room>: <receptacle>, ...`` list a room's receptacle classes. This module checks all of that,
that room tables only list objects the environment places in that room, that every object class
has a global prior line and that every task type has a file, so edits to the catalog or to the
texts cannot silently drift apart. Nothing here runs at training time.

Run ``python -m sdar.skills.check_texts`` (exit status 1 on problems).
"""

from __future__ import annotations

import re
import sys

from .bank import GENERAL, SkillBank

_ROOM_IN_TITLE = {
    "kitchen": re.compile(r"\bkitchen\b", re.IGNORECASE),
    "livingroom": re.compile(r"\bliving ?room\b", re.IGNORECASE),
    "bedroom": re.compile(r"\bbedroom\b", re.IGNORECASE),
    "bathroom": re.compile(r"\bbathroom\b", re.IGNORECASE),
}
_BULLET = re.compile(r"^\s*[-*]\s*([a-z]+)\s*:\s*(.+?)\s*$")
_WEIGHTED = re.compile(r"([a-z]+) \((\d+)%\)")
_TOLERANCE = 1.0  # percentage points (rounding)


def expected_priors(obj: str, room: str | None = None) -> dict[str, float]:
    """The catalog's prior for ``obj`` in percent, restricted to ``room`` and renormalised if given."""
    from sdar.envs.household.catalog import LOCATION_PRIORS, ROOMS

    prior = LOCATION_PRIORS[obj]
    if room is not None:
        prior = {recep: w for recep, w in prior.items() if recep in ROOMS[room]}
    total = sum(prior.values())
    return {recep: 100.0 * w / total for recep, w in prior.items()} if total else {}


def prior_lines(bank: SkillBank) -> list[tuple[str, str, str | None, list[tuple[str, int]]]]:
    """Every ``- <object>: <recep> (NN%), ...`` line: (file, object, room of its entry, pairs)."""
    from sdar.envs.household.catalog import LOCATION_PRIORS

    found = []
    for entry in bank.entries:
        rooms = [room for room, pattern in _ROOM_IN_TITLE.items() if pattern.search(entry.title)]
        for line in entry.body.splitlines():
            match = _BULLET.match(line)
            if match and match.group(1) in LOCATION_PRIORS:
                pairs = [(recep, int(pct)) for recep, pct in _WEIGHTED.findall(match.group(2))]
                if pairs:
                    found.append((entry.file, match.group(1), rooms[0] if len(rooms) == 1 else None, pairs))
    return found


def check_household(bank: SkillBank | None = None) -> list[str]:
    """Problems found in the household skills (an empty list when they agree with the catalog)."""
    from sdar.envs.household.catalog import LOCATION_PRIORS, ROOMS, TASK_TYPES
    from sdar.envs.household.world import belongs_in

    bank = bank or SkillBank.load("household")
    problems = []
    for name in (GENERAL, *TASK_TYPES):
        if name not in bank:
            problems.append(f"missing skill file {name}.md")
    globally_listed = set()
    for file, obj, room, pairs in prior_lines(bank):
        where = f"{file}.md, {obj}" + (f" (in a {room})" if room else "")
        if room is not None and not belongs_in(obj, room):
            problems.append(f"{where}: the environment never places a {obj} in a {room}")
            continue
        expected = expected_priors(obj, room)
        listed = dict(pairs)
        if set(listed) != set(expected):
            problems.append(f"{where}: lists {sorted(listed)}, catalog has {sorted(expected)}")
            continue
        for recep, pct in pairs:
            if abs(pct - expected[recep]) > _TOLERANCE:
                problems.append(f"{where}: {recep} is {pct}%, catalog says {expected[recep]:.0f}%")
        percents = [pct for _, pct in pairs]
        if percents != sorted(percents, reverse=True):
            problems.append(f"{where}: receptacles are not listed most likely first")
        if room is None:
            globally_listed.add(obj)
    for obj in LOCATION_PRIORS:
        if obj not in globally_listed:
            problems.append(f"no global location line for {obj!r} in the household skills")
    room_lines = {}
    for entry in bank.entries:
        for line in entry.body.splitlines():
            match = _BULLET.match(line)
            if match and match.group(1) in ROOMS:
                room_lines[match.group(1)] = {r.strip() for r in match.group(2).split(",")}
    for room, receptacles in ROOMS.items():
        if room not in room_lines:
            problems.append(f"no receptacle line for room {room!r}")
        elif room_lines[room] != set(receptacles):
            listed = sorted(room_lines[room])
            problems.append(f"room {room!r}: lists {listed}, catalog has {sorted(receptacles)}")
    return problems


def main() -> int:
    """Prints the problems found; returns the exit status."""
    problems = check_household()
    for problem in problems:
        print(problem)
    bank = SkillBank.load("household")
    n_lines = len(prior_lines(bank))
    print(f"household skills: {len(bank)} files, {n_lines} prior lines, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
