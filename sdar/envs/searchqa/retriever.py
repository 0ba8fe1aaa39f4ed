"""BM25 search over the searchqa passages (a ``bm25s`` index; the tokenizer is ours).

Tokenizer: accents folded, lowercase, thousands separators dropped (``30,814,175`` ->
``30814175``), tokens are runs of letters/digits that may contain inner ``-`` or ``.``
(``guinea-bissau``, ``p-block``, ``55.845``), English stopwords removed. Extra tokens keep short
codes findable: a number is also joined to the last non-stopword before it (``atomic number of
26`` -> ``number_26``, not confused with "group 26"), the word after "symbol" to it (``symbol He``
-> ``symbol_he``, though "he" is a stopword), and an internet domain keeps its dot (``.at``).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be been being below between
    both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no nor
    not now of off on once only or other our out over own same she should so some such than that
    the their them then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your""".split()
)

_TOKEN = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DOMAIN = re.compile(r"(?<![a-z0-9])\.[a-z]{2,3}\b")


def tokenize(text: str) -> list[str]:
    """Search tokens of ``text`` (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _THOUSANDS.sub("", text)
    tokens: list[str] = []
    context: list[str] = []
    previous = content = ""  # the word before, and the last word that is not a stopword
    for word in _TOKEN.findall(text):
        if word not in STOPWORDS:
            tokens.append(word)
        if previous == "symbol":
            context.append(f"symbol_{word}")
        elif word[0].isdigit() and content and not content[0].isdigit():
            context.append(f"{content}_{word}")
        previous = word
        if word not in STOPWORDS:
            content = word
    return tokens + context + _DOMAIN.findall(text)


class BM25Retriever:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over a fixed list of documents."""

    def __init__(self, documents: Sequence[str]):
        import bm25s

        if not documents:
            raise ValueError("documents must be a non-empty sequence of strings")
        self.size = len(documents)
        self._index = bm25s.BM25()
        self._index.index([tokenize(doc) for doc in documents], show_progress=False)
        self._vocab = set(self._index.vocab_dict)
        self._lock = threading.Lock()

    def search(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` best (document index, score) pairs for ``query``, best first; documents that
        share no token with the query are never returned (so fewer than ``k`` may come back)."""
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        tokens = [t for t in tokenize(query) if t in self._vocab]
        if not tokens:
            return []
        with self._lock:
            scores = np.asarray(self._index.get_scores(tokens), dtype=np.float64)
        order = np.lexsort((np.arange(self.size), -scores))[:k]  # ties: lower index first
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]
