"""Skill retrieval strategies: which skills the teacher sees for a task.

Every strategy answers ``retrieve(task, task_type=None, env_name=None) -> str`` with markdown skill
text for the task, and takes ``update(file, reward)`` feedback (only ``ucb`` learns from it):

* ``keyword`` (the default): reads the task type from the task text with keyword rules, falls back
  to the given ``task_type`` (e.g. ``info["task_type"]``) and then to the env variant
  (``"textworld:cooking"``); returns the general file plus that type's file.
* ``full``: every skill file of the environment family.
* ``random``: the general file plus one task-type file drawn at random (seeded).
* ``ucb``: the general file plus the task-type file a UCB1 bandit picks; ``update(file, reward)``
  feeds it the episode reward, so it shifts toward the files that pay.
* ``bm25``: the ``k`` entries (``## `` sections) most similar to the task text under BM25.

A retriever built with a bank always uses that bank; one built without serves every family with
its built-in skills, chosen from ``env_name`` on each call.
"""

from __future__ import annotations

import math
import random
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from .bank import GENERAL, SkillBank, SkillEntry, env_family, env_variant
from .classify import classify_task, task_statement

RngLike = random.Random | int | None


def _as_rng(rng: RngLike) -> random.Random:
    """A :class:`random.Random`: ``rng`` itself, or a new one seeded with it (None: seed 0)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, int):
        return random.Random(0 if rng is None else rng)
    raise TypeError(f"rng must be a random.Random, an int seed or None; got {type(rng).__name__}")


class SkillRetriever(ABC):
    """Base class of the strategies: bank selection, task-type inference and the feedback hook.

    Args:
        bank: the skills to retrieve from. None: the built-in bank of each call's ``env_name``.
    """

    name: ClassVar[str]

    def __init__(self, bank: SkillBank | None = None) -> None:
        if bank is not None and not isinstance(bank, SkillBank):
            raise TypeError(f"bank must be a SkillBank or None; got {type(bank).__name__}")
        self.bank = bank

    def bank_for(self, env_name: str | None = None) -> SkillBank:
        """The bank serving ``env_name``: the retriever's own, or the family's built-in one."""
        if self.bank is not None:
            if env_name is not None:
                family = env_family(env_name)
                builtin = SkillBank.builtin_families()
                if family != self.bank.family and family in builtin and self.bank.family in builtin:
                    raise ValueError(
                        f"this retriever holds {self.bank.family!r} skills but was asked about a "
                        f"{family!r} environment ({env_name!r})"
                    )
            return self.bank
        if env_name is None:
            raise ValueError("pass env_name (e.g. 'household'), or build the retriever with a SkillBank")
        return SkillBank.load(env_name)

    def infer_task_type(
        self, task: str, task_type: str | None = None, env_name: str | None = None
    ) -> str | None:
        """The task-type file for a task: keyword rules, then ``task_type``, then the env variant.

        Only names the bank has a file for count; None when nothing fits.
        """
        bank = self.bank_for(env_name)
        family = env_family(env_name) if env_name else bank.family
        candidates = [
            classify_task(task, family, bank.type_names),
            task_type.strip().lower() if isinstance(task_type, str) else None,
            env_variant(env_name),
        ]
        for candidate in candidates:
            if candidate and candidate != GENERAL and candidate in bank:
                return candidate
        return None

    @abstractmethod
    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        """Skill text (markdown) for the task."""

    def __call__(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        return self.retrieve(task, task_type, env_name)

    def update(self, file: str, reward: float, env_name: str | None = None) -> None:
        """Feedback: the episode that used skill file ``file`` earned ``reward``. Ignored by default."""
        del file, reward, env_name


class KeywordRetriever(SkillRetriever):
    """General skills plus the skill file of the task type read from the task text."""

    name = "keyword"

    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        bank = self.bank_for(env_name)
        chosen = self.infer_task_type(task, task_type, env_name)
        if chosen is not None:
            return bank.text([chosen], with_general=True)
        return bank.general.text if bank.general is not None else bank.text()


class FullRetriever(SkillRetriever):
    """Every skill file of the environment family."""

    name = "full"

    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        return self.bank_for(env_name).text()


class RandomRetriever(SkillRetriever):
    """General skills plus one task-type file drawn uniformly at random (an ablation baseline).

    Args:
        bank: see :class:`SkillRetriever`.
        rng: a :class:`random.Random`, or an int seed (None: seed 0), so draws are reproducible.
    """

    name = "random"

    def __init__(self, bank: SkillBank | None = None, rng: RngLike = None) -> None:
        super().__init__(bank)
        self.rng = _as_rng(rng)
        self.last_file: str | None = None

    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        bank = self.bank_for(env_name)
        if not bank.type_names:
            self.last_file = bank.names[0]
            return bank.text()
        self.last_file = self.rng.choice(bank.type_names)
        return bank.text([self.last_file], with_general=True)


class UCBRetriever(SkillRetriever):
    """A UCB1 bandit over the task-type skill files of each family.

    :meth:`select` plays every file once (in a seeded random order), then the file maximising
    ``mean reward + c * sqrt(2 ln N / n_file)``; :meth:`update` records the reward of an episode
    run with a file. UCB1's bonus assumes rewards in [0, 1]; scale ``c`` for other ranges.

    Args:
        bank: see :class:`SkillRetriever`.
        c: exploration weight (1.0 is textbook UCB1).
        rng: a :class:`random.Random` or an int seed (None: seed 0); breaks ties reproducibly.
        with_general: prepend the general file to the selected one.
    """

    name = "ucb"

    def __init__(
        self, bank: SkillBank | None = None, c: float = 1.0, rng: RngLike = None, with_general: bool = True
    ) -> None:
        super().__init__(bank)
        if not (c >= 0.0 and math.isfinite(c)):
            raise ValueError(f"c must be a finite number >= 0; got {c!r}")
        self.c = float(c)
        self.rng = _as_rng(rng)
        self.with_general = with_general
        self._stats: dict[str, dict[str, list[float]]] = {}  # family -> file -> [count, reward sum]
        self._last_family: str | None = None
        self.last_file: str | None = None

    def _arms(self, bank: SkillBank) -> dict[str, list[float]]:
        if bank.family not in self._stats:
            arms = bank.type_names or bank.names
            self._stats[bank.family] = {name: [0.0, 0.0] for name in arms}
        return self._stats[bank.family]

    def select(self, task: str = "", task_type: str | None = None, env_name: str | None = None) -> str:
        """The skill file to use next (the task text is not used: UCB1 is context-free)."""
        del task, task_type
        bank = self.bank_for(env_name)
        arms = self._arms(bank)
        untried = [name for name, (count, _) in arms.items() if count == 0]
        if untried:
            choice = self.rng.choice(untried)
        else:
            total = sum(count for count, _ in arms.values())
            scores = {
                name: reward / count + self.c * math.sqrt(2.0 * math.log(total) / count)
                for name, (count, reward) in arms.items()
            }
            best = max(scores.values())
            choice = self.rng.choice([name for name, score in scores.items() if score >= best - 1e-12])
        self._last_family, self.last_file = bank.family, choice
        return choice

    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        bank = self.bank_for(env_name)
        return bank.text([self.select(task, task_type, env_name)], with_general=self.with_general)

    def update(self, file: str, reward: float, env_name: str | None = None) -> None:
        """Records that an episode run with skill file ``file`` earned ``reward``."""
        if env_name is not None:
            family = self.bank_for(env_name).family
        elif self.bank is not None:
            family = self.bank.family
        elif self._last_family is not None:
            family = self._last_family
        else:
            raise ValueError("pass env_name: this retriever has no bank and has not selected yet")
        if family not in self._stats:
            self._arms(self.bank_for(env_name) if env_name is not None else SkillBank.load(family))
        arms = self._stats[family]
        if file not in arms:
            raise ValueError(f"{file!r} is not a {family!r} skill file; arms: {', '.join(arms)}")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite; got {reward!r}")
        arms[file][0] += 1.0
        arms[file][1] += reward

    def counts(self, env_name: str | None = None) -> dict[str, int]:
        """How many rewards each file of the family has received."""
        arms = self._arms(self.bank_for(env_name))
        return {name: int(count) for name, (count, _) in arms.items()}

    def means(self, env_name: str | None = None) -> dict[str, float]:
        """The mean reward of each file of the family (0.0 for files never rewarded)."""
        arms = self._arms(self.bank_for(env_name))
        return {name: (reward / count if count else 0.0) for name, (count, reward) in arms.items()}


_STOPWORDS = frozenset(
    "a an and are as at be but by for from if in into is it its no not of on or such that the their then "
    "there these they this to was will with you your some task can do does any each".split()
)
_STEM_SUFFIXES = (("ies", "y"), ("oes", "o"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("e", ""))


def _stem(word: str) -> str:
    """A tiny suffix stripper: heated/heating/heats -> heat, apples/apple -> appl, potatoes -> potato."""
    if word.endswith("ss") or word.isdigit():
        return word
    for suffix, replacement in _STEM_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stop-word-free, lightly stemmed word tokens (underscores split words)."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))
    return [_stem(word) for word in words if word not in _STOPWORDS]


class BM25Retriever(SkillRetriever):
    """The ``k`` skill entries most similar to the task text under BM25 (package ``bm25s``).

    Each entry is indexed with its file name, title and body. With ``use_task_type`` the inferred
    task type's name joins the query, so "heat some egg" also matches the ``heat`` file's entries.
    When nothing in the query matches, the first ``k`` entries (the general skills) are returned.

    Args:
        bank: see :class:`SkillRetriever`.
        k: how many entries to return.
        use_task_type: add the inferred task type (see :meth:`infer_task_type`) to the query.
    """

    name = "bm25"

    def __init__(self, bank: SkillBank | None = None, k: int = 3, use_task_type: bool = True) -> None:
        super().__init__(bank)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int; got {k!r}")
        self.k = k
        self.use_task_type = use_task_type
        self._indexes: dict[str, tuple[SkillBank, Any, list[SkillEntry]]] = {}  # family -> index

    def _index(self, bank: SkillBank) -> tuple[Any, list[SkillEntry]]:
        cached = self._indexes.get(bank.family)
        if cached is None or cached[0] is not bank:
            try:
                import bm25s
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError("the bm25 retriever needs the bm25s package: pip install bm25s") from exc
            entries = bank.entries
            corpus = [tokenize(f"{entry.file} {entry.title} {entry.body}") or ["_"] for entry in entries]
            index = bm25s.BM25()
            index.index(corpus, show_progress=False)
            cached = self._indexes[bank.family] = (bank, index, entries)
        return cached[1], cached[2]

    def retrieve_entries(
        self, task: str, task_type: str | None = None, env_name: str | None = None
    ) -> list[tuple[SkillEntry, float]]:
        """The top entries with their BM25 scores, best first (scores of 0 are dropped)."""
        bank = self.bank_for(env_name)
        index, entries = self._index(bank)
        query = tokenize(task_statement(task))
        if self.use_task_type:
            inferred = self.infer_task_type(task, task_type, env_name)
            if inferred is not None:
                query += tokenize(inferred)
        if not query:
            return []
        k = min(self.k, len(entries))
        docs, scores = index.retrieve([query], k=k, show_progress=False)
        return [(entries[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0.0]

    def retrieve(self, task: str, task_type: str | None = None, env_name: str | None = None) -> str:
        ranked = [entry for entry, _ in self.retrieve_entries(task, task_type, env_name)]
        if not ranked:
            ranked = self.bank_for(env_name).entries[: self.k]
        return "\n\n".join(entry.text for entry in ranked)


STRATEGIES: dict[str, type[SkillRetriever]] = {
    cls.name: cls for cls in (KeywordRetriever, FullRetriever, RandomRetriever, UCBRetriever, BM25Retriever)
}
"""strategy name -> retriever class."""


def make_retriever(name: str = "keyword", bank: SkillBank | None = None, **kwargs: Any) -> SkillRetriever:
    """Builds the retriever called ``name`` (keyword, full, random, ucb, bm25) over ``bank``.

    ``kwargs`` go to the strategy (``rng`` for random/ucb, ``c`` for ucb, ``k`` for bm25).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in STRATEGIES:
        raise ValueError(f"unknown skill retrieval strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[key](bank, **kwargs)
