"""SearchQAEnv: answer a question by searching an offline encyclopedia (``make_env("searchqa")``).

Actions (``action_format = "search"``); ``step()`` accepts either form:

* tag-wrapped, as the model writes it: ``<search>capital of Peru</search>`` or
  ``<answer>Lima</answer>``. The first such tag in the text counts (text around it is ignored);
  a closing tag missing at the very end (generation stopped on it) is tolerated.
* prefixed plain text: ``search: capital of Peru`` or ``answer: Lima`` (case-insensitive prefix).

A search returns the top-3 passages as the observation (reward 0). An answer ends the episode with
reward 1.0 if it matches a gold alias after :func:`normalize_answer`, else 0.0; ``won`` is
``reward == 1``. Anything else is an invalid action: the observation says so, reward 0, and the
step counts. The episode ends at the latest on step ``max_steps`` (4). ``admissible_actions`` are
the two templates ``["<search>...</search>", "<answer>...</answer>"]``, not literal commands.
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

from ..base import Observation, StepResult
from .corpus import SPLITS, TASK_TYPES, Corpus, Question, get_corpus, stable_hash
from .retriever import BM25Retriever
from .scoring import exact_match

ADMISSIBLE_ACTIONS = ["<search>...</search>", "<answer>...</answer>"]
INVALID_ACTION = "Invalid action. Use <search>query</search> or <answer>text</answer>."
MAX_QUERY_CHARS = 500

_TAG = re.compile(r"<(search|answer)>(.*?)(?:</\1>|\Z)", re.IGNORECASE | re.DOTALL)
_PREFIX = re.compile(r"\A\s*(search|answer)\s*:(.*)\Z", re.IGNORECASE | re.DOTALL)


class Action(NamedTuple):
    """A parsed action: ``kind`` is "search" or "answer", ``text`` the query or the answer."""

    kind: str
    text: str


def parse_action(action: str) -> Action | None:
    """The search or answer in ``action`` (tag-wrapped or "search:"/"answer:" prefixed), or None
    when there is none or its text is empty."""
    if not isinstance(action, str):
        return None
    match = _TAG.search(action) or _PREFIX.match(action)
    if match is None:
        return None
    text = " ".join(match.group(2).split())
    return Action(match.group(1).lower(), text) if text else None


_RETRIEVER: BM25Retriever | None = None
_RETRIEVER_LOCK = threading.Lock()


def get_retriever() -> BM25Retriever:
    """The BM25 index over :func:`get_corpus`'s passages (title + text), built once per process."""
    global _RETRIEVER
    with _RETRIEVER_LOCK:
        if _RETRIEVER is None:
            _RETRIEVER = BM25Retriever([f"{p.title}. {p.text}" for p in get_corpus().passages])
        return _RETRIEVER


def search(query: str, k: int = 3) -> list[str]:
    """Passage ids of the ``k`` best passages for ``query`` (best first)."""
    corpus = get_corpus()
    return [corpus.passages[i].pid for i, _ in get_retriever().search(query, k)]


class SearchQAEnv:
    """Offline search-augmented question answering over countries and chemical elements.

    Args:
        split: "train", "valid" or "test" (``make_env("searchqa:test")`` passes it as ``variant``).
        max_steps: turns per episode; the episode ends on the answer or on this step.
        top_k: passages returned per search.
        task_types: keep only these question types (default: all of "lookup", "multi_hop",
            "comparison").

    ``reset(seed)`` picks question ``seed % n`` of the split in a fixed shuffled order, so seeds
    0..n-1 visit every question once. ``info["task_type"]`` is the question type; the gold answers
    are kept out of observations (``env.question`` holds the current :class:`Question`).
    """

    name = "searchqa"
    action_format = "search"

    def __init__(
        self,
        split: str | None = None,
        max_steps: int = 4,
        top_k: int = 3,
        task_types: tuple[str, ...] | list[str] | None = None,
        variant: str | None = None,
    ):
        if split is not None and variant is not None and split != variant:
            raise ValueError(f"split={split!r} and variant={variant!r} disagree; give one of them")
        split = split or variant or "train"
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {top_k!r}")
        types = tuple(task_types) if task_types is not None else TASK_TYPES
        unknown = [t for t in types if t not in TASK_TYPES]
        if unknown or not types:
            raise ValueError(f"task_types must be a non-empty subset of {TASK_TYPES}; got {task_types!r}")
        self.split = split
        self.max_steps = max_steps
        self.top_k = top_k
        self.task_types = types
        self.corpus: Corpus = get_corpus()
        self.retriever = get_retriever()
        pool = [q for q in self.corpus.by_split[split] if q.task_type in types]
        if not pool:
            raise ValueError(f"no {types} questions in split {split!r}")
        self.questions = sorted(pool, key=lambda q: (stable_hash(q.qid), q.qid))
        self.question: Question | None = None
        self._step = 0
        self._done = True
        self._last: Observation | None = None

    def __len__(self) -> int:
        return len(self.questions)

    def reset(self, seed: int) -> Observation:
        """Starts the episode of question ``seed % len(self)``."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        self.question = self.questions[seed % len(self.questions)]
        self._step = 0
        self._done = False
        self._last = self._observation(f"Question: {self.question.question}")
        return self._last

    def step(self, action: str) -> StepResult:
        """Plays a search or an answer (see the module docstring); never raises on bad text."""
        if self.question is None or self._last is None:
            raise RuntimeError("searchqa: call reset(seed) before step()")
        if self._done:
            return StepResult(self._last, 0.0, True, False, {"already_done": True})
        self._step += 1
        parsed = parse_action(action)
        info: dict = {"task_type": self.question.task_type, "step": self._step}
        reward, won = 0.0, False
        if parsed is None:
            text = INVALID_ACTION
            info["invalid"] = True
        elif parsed.kind == "search":
            hits = self.retriever.search(parsed.text[:MAX_QUERY_CHARS], self.top_k)
            info["retrieved"] = [self.corpus.passages[i].pid for i, _ in hits]
            text = self._format(hits)
        else:
            won = exact_match(parsed.text, self.question.answers)
            reward = 1.0 if won else 0.0
            info.update(answer=parsed.text, gold=list(self.question.answers))
            text = f"Your answer: {parsed.text}"
        answered = parsed is not None and parsed.kind == "answer"
        self._done = answered or self._step >= self.max_steps
        info["truncated"] = self._done and not answered
        self._last = self._observation(text)
        return StepResult(self._last, reward, self._done, won, info)

    def _format(self, hits: list[tuple[int, float]]) -> str:
        if not hits:
            return "No results found."
        lines = []
        for rank, (index, _) in enumerate(hits, start=1):
            passage = self.corpus.passages[index]
            lines.append(f"Doc {rank} (Title: {passage.title}) {passage.text}")
        return "\n".join(lines)

    def _observation(self, text: str) -> Observation:
        assert self.question is not None
        info = {
            "task_type": self.question.task_type,
            "step": self._step,
            "split": self.split,
            "qid": self.question.qid,
        }
        return Observation(text, self.question.question, list(ADMISSIBLE_ACTIONS), info)

    def close(self) -> None:
        """Nothing to release (the index is shared by the process); provided for symmetry."""
