"""Exact-match scoring of searchqa answers (the SQuAD / Search-R1 normalisation, plus accent folding)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercases, folds accents (é -> e), removes punctuation and the articles a/an/the, and
    collapses whitespace: ``"The  Peso!"`` -> ``"peso"``."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Iterable[str]) -> bool:
    """Whether ``prediction`` equals any of the gold ``answers`` after :func:`normalize_answer`."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(answer) for answer in answers)
