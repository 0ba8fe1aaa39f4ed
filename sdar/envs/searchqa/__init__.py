"""searchqa: offline search-augmented question answering (``make_env("searchqa")``).

Facts about countries (``countryinfo``) and chemical elements (``mendeleev``) become short
encyclopedic passages, searched with BM25 (``bm25s``); questions are single-hop lookups,
two-hop questions and comparisons with exact-match answers. Modules: ``facts`` (fact tables),
``corpus`` (passages, questions, splits), ``retriever`` (BM25), ``scoring`` (answer
normalisation), ``env`` (the environment).
"""

from .corpus import Corpus, Passage, Question, get_corpus
from .env import ADMISSIBLE_ACTIONS, INVALID_ACTION, SearchQAEnv, parse_action, search
from .scoring import exact_match, normalize_answer

__all__ = [
    "ADMISSIBLE_ACTIONS",
    "INVALID_ACTION",
    "Corpus",
    "Passage",
    "Question",
    "SearchQAEnv",
    "exact_match",
    "get_corpus",
    "normalize_answer",
    "parse_action",
    "search",
]
