"""Keyword rules that read a task's type from its text, per environment family.

Rules are tried in order and the first match wins, so the more specific ones come first: a
household "put a clean mug in microwave" is a *clean* task (the microwave is only the target), and
"put two pencils in drawer" is *pick_two* whatever else it says. Appliance names are deliberately
not keywords: the target receptacle of any task can be a fridge, a microwave or a sink.
"""

from __future__ import annotations

import re

_HOUSEHOLD_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "look_at_obj_in_light",
        re.compile(r"\b(look at|examine|inspect)\b|\b(desk ?lamp|floor ?lamp|lamp|light)\b"),
    ),
    ("pick_two", re.compile(r"\b(two|2|both|pair of)\b")),
    ("clean", re.compile(r"\b(clean(ed)?|wash(ed)?|rinse(d)?)\b")),
    ("heat", re.compile(r"\b(heat(ed)?|hot|warm(ed)?)\b")),
    ("cool", re.compile(r"\b(cool(ed)?|cold|chill(ed)?)\b")),
    ("pick_and_place", re.compile(r"\b(put|place|move|bring)\b")),
)

_TEXTWORLD_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("coin_collector", re.compile(r"\bcoins?\b")),
    (
        "cooking",
        re.compile(
            r"\b(cook(book|ing|ed)?|recipe|meal|ingredients?|dinner|lunch|breakfast|delicious|"
            r"slice[ds]?|dice[ds]?|chop(ped)?|roast(ed)?|fr(y|ied)|grill(ed)?)\b"
        ),
    ),
    (
        "treasure_hunter",
        re.compile(r"\b(treasure|find|retrieve|recover|pick up|take|grab|locate|hunt|search)\b"),
    ),
)

_SEARCHQA_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "comparison",
        re.compile(
            r"\b(larger|largest|smaller|smallest|bigger|higher|lower|greater|fewer|more|less|"
            r"compare[ds]?|comparison)\b|\bthan\b|\bor\b.*\?\s*$"
        ),
    ),
    (
        "multi_hop",
        re.compile(
            r"\bwhose\b|\b(country|element|nation|state|city|capital)\s+(that|which|with|of which)\b"
            r"|\bthe (country|element) (bordering|having|located)\b"
        ),
    ),
    ("lookup", re.compile(r"\b(what|which|who|how many|how much|how large|name|give|tell)\b|\?")),
)

RULES: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "household": _HOUSEHOLD_RULES,
    "textworld": _TEXTWORLD_RULES,
    "searchqa": _SEARCHQA_RULES,
}
"""family -> ordered (task type, pattern) rules; the first pattern found in the task text wins."""

_TASK_PREFIX = re.compile(r"your task is to\s*:?", re.IGNORECASE)


def task_statement(task: str) -> str:
    """The part of a task text after "Your task is to:" (the whole text when it has no such prefix)."""
    ends = [match.end() for match in _TASK_PREFIX.finditer(task)]
    return task[ends[-1] :] if ends else task


def classify_task(task: str, family: str, types: list[str] | None = None) -> str | None:
    """The task type the keyword rules of ``family`` read from ``task``, or None if none matches.

    For a family without rules (a user's own bank), a task type is found when its name (with
    underscores read as spaces) appears in the task text; ``types`` lists the candidate names.
    """
    text = task_statement(task).lower()
    rules = RULES.get(family)
    if rules is None:
        for name in sorted(types or [], key=len, reverse=True):
            if re.search(rf"\b{re.escape(name.lower().replace('_', ' '))}\b", text.replace("_", " ")):
                return name
        return None
    for task_type, pattern in rules:
        if pattern.search(text):
            return task_type
    return None
