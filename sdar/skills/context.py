"""How retrieved skills enter the teacher's prompt."""

from __future__ import annotations

SKILL_HEADER = "[Privileged Skill Information]"


def teacher_context(skills: str) -> str:
    """The privileged-context block prepended for the teacher: the header, the skills, a blank line."""
    return f"{SKILL_HEADER}\n{skills}\n\n"
