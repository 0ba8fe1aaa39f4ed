"""Skills for Self-Distilled Agentic RL: the teacher is the policy itself, given retrieved skills.

A :class:`SkillBank` holds the markdown skills of one environment family (built-in ones ship in
``sdar/skills/texts``; bring your own with :meth:`SkillBank.from_directory`). A retriever picks the
skills for a task (:func:`make_retriever`: keyword, full, random, ucb, bm25) and
:func:`teacher_context` wraps them for the teacher's prompt::

    from sdar.skills import make_retriever, teacher_context

    retriever = make_retriever("keyword")
    skills = retriever.retrieve("Your task is to: heat some egg and put it in countertop.",
                                env_name="household")
    prompt = teacher_context(skills) + student_prompt
"""

from .bank import GENERAL, SkillBank, SkillEntry, SkillFile, env_family, env_variant
from .classify import classify_task
from .context import SKILL_HEADER, teacher_context
from .retrieval import (
    STRATEGIES,
    BM25Retriever,
    FullRetriever,
    KeywordRetriever,
    RandomRetriever,
    SkillRetriever,
    UCBRetriever,
    make_retriever,
)

__all__ = [
    "GENERAL",
    "SKILL_HEADER",
    "STRATEGIES",
    "BM25Retriever",
    "FullRetriever",
    "KeywordRetriever",
    "RandomRetriever",
    "SkillBank",
    "SkillEntry",
    "SkillFile",
    "SkillRetriever",
    "UCBRetriever",
    "classify_task",
    "env_family",
    "env_variant",
    "make_retriever",
    "teacher_context",
]
