"""The searchqa corpus: encyclopedic passages written from the fact tables, and questions over them.

Passages (deterministic, two per entity, so that a two-hop question needs two of them):

* ``country/<name>/geography``: region, subregion, capital, area, land borders.
* ``country/<name>/people``: population, demonym, currency code, calling code, internet domain.
* ``element/<name>/properties``: symbol, atomic number and weight, period, group, block, series.
* ``element/<name>/history``: discovery year, discoverers, place.

Questions (``task_type``), each with gold answers (any alias counts) and the gold passages in hop
order:

* ``lookup``: one fact of one passage ("What is the capital of Peru?").
* ``multi_hop``: a bridge entity first ("What is the ISO currency code of the country whose capital
  is Lima?": geography of Peru, then people of Peru). Bridges are unique (a capital, demonym or
  domain shared by two countries is not used) and never name the answer entity.
* ``comparison``: two entities, answer one of them ("Which country has the larger population, Peru
  or Chile?"); pairs are drawn with a fixed seed, ties are skipped.

Split: a stable hash (SHA-256) of the question text sends 80% to "train", 10% to "valid" and 10%
to "test". :func:`get_corpus` builds everything once per process.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from .facts import Country, Element, data_versions, load_countries, load_elements
from .scoring import normalize_answer

SPLITS = ("train", "valid", "test")
TASK_TYPES = ("lookup", "multi_hop", "comparison")


@dataclass(frozen=True)
class Passage:
    """One searchable passage: ``pid`` like "country/Peru/geography", a title, the text."""

    pid: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    """One question: its answers (aliases), type, template name, gold passages (hop order), split."""

    qid: str
    question: str
    answers: tuple[str, ...]
    task_type: str
    template: str
    gold_pids: tuple[str, ...]
    split: str = ""


@dataclass
class Corpus:
    """All passages and questions, with lookups by passage id and by split."""

    passages: list[Passage]
    questions: list[Question]
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.passage_index = {p.pid: i for i, p in enumerate(self.passages)}
        self.by_split: dict[str, list[Question]] = {s: [] for s in SPLITS}
        for question in self.questions:
            self.by_split[question.split].append(question)

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of questions per split and task type."""
        return {s: dict(Counter(q.task_type for q in qs)) for s, qs in self.by_split.items()}


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash of ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(question: str) -> str:
    """The split of a question: "train" (80%), "valid" (10%) or "test" (10%), by a stable hash of its text."""
    bucket = stable_hash(question) % 10
    return "test" if bucket == 9 else "valid" if bucket == 8 else "train"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def country_pid(country: Country, part: str) -> str:
    return f"country/{country.name}/{part}"


def element_pid(element: Element, part: str) -> str:
    return f"element/{element.name}/{part}"


def country_passages(c: Country) -> list[Passage]:
    """The geography and people passages of one country."""
    borders = (
        f"{c.name} shares land borders with {_join(list(c.neighbours))}."
        if c.neighbours
        else f"{c.name} has no land borders with other countries."
    )
    geography = (
        f"{c.name} is a country in {c.subregion}, in the {c.region} region. The capital city of {c.name} "
        f"is {c.capital}. {c.name} covers an area of {c.area_km2:,} square kilometres. {borders}"
    )
    people = [f"{c.name} has a population of {c.population:,}."]
    if c.demonym:
        people.append(f"People from {c.name} are called {c.demonym}.")
    people.append(f"The ISO currency code of {c.name} is {_join(list(c.currency_codes))}.")
    if c.calling_codes:
        people.append(
            f"The international calling code of {c.name} is {_join(['+' + x for x in c.calling_codes])}."
        )
    if c.tlds:
        people.append(f"The internet domain of {c.name} is {_join(list(c.tlds))}.")
    return [
        Passage(country_pid(c, "geography"), f"{c.name} (geography)", geography),
        Passage(country_pid(c, "people"), f"{c.name} (people and economy)", " ".join(people)),
    ]


def element_passages(e: Element) -> list[Passage]:
    """The properties and history passages of one element."""
    place = f"the {_ordinal(e.period)} period" + (f" and group {e.group}" if e.group else "")
    properties = [
        f"{e.name} is a chemical element with the symbol {e.symbol} and atomic number {e.atomic_number}.",
        f"The standard atomic weight of {e.name.lower()} is {e.atomic_weight:g}.",
        f"{e.name} is in {place} of the periodic table, in the {e.block}-block.",
    ]
    if e.series:
        properties.append(f"{e.name} belongs to the {e.series.lower()}.")
    if e.discovery_year is None:
        history = f"{e.name} has been known since ancient times."
    else:
        history = f"{e.name} was discovered in {e.discovery_year}"
        if e.discoverers:
            history += f" by {e.discoverers}"
        if e.discovery_locations:
            history += f" in {_join(list(e.discovery_locations))}"
        history += "."
    return [
        Passage(element_pid(e, "properties"), f"{e.name} (properties)", " ".join(properties)),
        Passage(element_pid(e, "history"), f"{e.name} (history)", history),
    ]


def build_passages(countries: list[Country], elements: list[Element]) -> list[Passage]:
    """All passages, countries first, in a fixed order."""
    passages = [p for c in countries for p in country_passages(c)]
    return passages + [p for e in elements for p in element_passages(e)]


class _QuestionMaker:
    """Accumulates questions, dropping duplicates of an earlier question's text."""

    def __init__(self) -> None:
        self.questions: list[Question] = []
        self._seen: set[str] = set()

    def add(self, text: str, answers, task_type: str, template: str, gold: tuple[str, ...]) -> None:
        key = normalize_answer(text)
        if key in self._seen:
            return
        self._seen.add(key)
        answers = tuple(dict.fromkeys(a for a in answers if a))
        qid = f"{template}-{stable_hash(text) % 10**10:010d}"
        self.questions.append(Question(qid, text, answers, task_type, template, gold, split_of(text)))


def _names(c: Country) -> tuple[str, ...]:
    return (c.name, *c.aliases)


def _unique(values: list[str | None]) -> set[str]:
    """The values that occur exactly once (normalised), for unambiguous bridges."""
    counts = Counter(normalize_answer(v) for v in values if v)
    return {v for v in counts if counts[v] == 1}


def _names_overlap(a: str, b: str) -> bool:
    """Whether one name contains the other (e.g. "Panama" and "Panama City")."""
    a, b = normalize_answer(a), normalize_answer(b)
    return a in b or b in a


def build_questions(countries: list[Country], elements: list[Element]) -> list[Question]:
    """All lookup, multi-hop and comparison questions (see the module docstring)."""
    make = _QuestionMaker()
    by_name = {c.name: c for c in countries}
    geo = {c.name: country_pid(c, "geography") for c in countries}
    ppl = {c.name: country_pid(c, "people") for c in countries}
    props = {e.name: element_pid(e, "properties") for e in elements}
    hist = {e.name: element_pid(e, "history") for e in elements}

    # ---- lookup: countries
    for c in countries:
        make.add(f"What is the capital of {c.name}?", [c.capital], "lookup", "capital", (geo[c.name],))
        make.add(f"In which region of the world is {c.name}?", [c.region], "lookup", "region", (geo[c.name],))
        make.add(f"In which subregion is {c.name}?", [c.subregion], "lookup", "subregion", (geo[c.name],))
        if c.neighbours:
            answers = [n for nb in c.neighbours for n in _names(by_name[nb])]
            make.add(f"Name a country that borders {c.name}.", answers, "lookup", "border", (geo[c.name],))
        pop = [str(c.population), f"{c.population:,}"]
        make.add(f"What is the population of {c.name}?", pop, "lookup", "population", (ppl[c.name],))
        make.add(
            f"What is the ISO currency code of {c.name}?",
            c.currency_codes,
            "lookup",
            "currency",
            (ppl[c.name],),
        )
        if c.calling_codes:
            codes = [x for code in c.calling_codes for x in (code, "+" + code)]
            make.add(
                f"What is the international calling code of {c.name}?",
                codes,
                "lookup",
                "calling",
                (ppl[c.name],),
            )
        if c.demonym:
            make.add(
                f"What are people from {c.name} called?", [c.demonym], "lookup", "demonym", (ppl[c.name],)
            )
        if c.tlds:
            make.add(f"What is the internet domain of {c.name}?", c.tlds, "lookup", "domain", (ppl[c.name],))

    # ---- lookup: elements
    for e in elements:
        p = (props[e.name],)
        make.add(f"What is the chemical symbol of {e.name.lower()}?", [e.symbol], "lookup", "symbol", p)
        make.add(
            f"What is the atomic number of {e.name.lower()}?", [str(e.atomic_number)], "lookup", "number", p
        )
        make.add(f"Which chemical element has the symbol {e.symbol}?", [e.name], "lookup", "by_symbol", p)
        make.add(
            f"Which chemical element has atomic number {e.atomic_number}?", [e.name], "lookup", "by_number", p
        )
        make.add(
            f"In which period of the periodic table is {e.name.lower()}?",
            [str(e.period), _ordinal(e.period)],
            "lookup",
            "period",
            p,
        )
        if e.group:
            make.add(
                f"In which group of the periodic table is {e.name.lower()}?",
                [str(e.group)],
                "lookup",
                "group",
                p,
            )
        make.add(
            f"In which block of the periodic table is {e.name.lower()}?",
            [e.block, f"{e.block}-block", f"{e.block} block"],
            "lookup",
            "block",
            p,
        )
        if e.discovery_year is not None:
            make.add(
                f"In which year was {e.name.lower()} discovered?",
                [str(e.discovery_year)],
                "lookup",
                "discovery_year",
                (hist[e.name],),
            )

    # ---- multi-hop
    unique_capitals = _unique([c.capital for c in countries])
    unique_demonyms = _unique([c.demonym for c in countries])
    unique_tlds = _unique([t for c in countries for t in c.tlds])
    for c in countries:
        g, p = geo[c.name], ppl[c.name]
        if normalize_answer(c.capital) in unique_capitals and not _names_overlap(c.capital, c.name):
            bridge = f"the country whose capital is {c.capital}"
            make.add(
                f"What is the ISO currency code of {bridge}?",
                c.currency_codes,
                "multi_hop",
                "capital>currency",
                (g, p),
            )
            if c.calling_codes:
                codes = [x for code in c.calling_codes for x in (code, "+" + code)]
                make.add(
                    f"What is the international calling code of {bridge}?",
                    codes,
                    "multi_hop",
                    "capital>calling",
                    (g, p),
                )
            if c.demonym:
                make.add(
                    f"What are people from {bridge} called?",
                    [c.demonym],
                    "multi_hop",
                    "capital>demonym",
                    (g, p),
                )
        if (
            c.demonym
            and normalize_answer(c.demonym) in unique_demonyms
            and not _names_overlap(c.demonym, c.capital)
        ):
            make.add(
                f"What is the capital of the country whose people are called {c.demonym}?",
                [c.capital],
                "multi_hop",
                "demonym>capital",
                (p, g),
            )
        for tld in c.tlds:
            if normalize_answer(tld) in unique_tlds:
                make.add(
                    f"What is the capital of the country whose internet domain is {tld}?",
                    [c.capital],
                    "multi_hop",
                    "domain>capital",
                    (p, g),
                )
        if len(c.neighbours) == 1:
            other = by_name[c.neighbours[0]]
            make.add(
                f"What is the capital of the only country that borders {c.name}?",
                [other.capital],
                "multi_hop",
                "neighbour>capital",
                (g, geo[other.name]),
            )
    for e in elements:
        if e.discovery_year is not None:
            make.add(
                f"In which year was the chemical element with atomic number {e.atomic_number} discovered?",
                [str(e.discovery_year)],
                "multi_hop",
                "number>discovery_year",
                (props[e.name], hist[e.name]),
            )
        if len(e.discovery_locations) == 1 and e.discovery_locations[0] in by_name:
            country = by_name[e.discovery_locations[0]]
            make.add(
                f"What is the capital of the country where {e.name.lower()} was discovered?",
                [country.capital],
                "multi_hop",
                "discovery>capital",
                (hist[e.name], geo[country.name]),
            )

    # ---- comparison
    rng = random.Random("sdar-searchqa-comparison-v1")
    by_subregion: dict[str, list[Country]] = {}
    for c in countries:
        by_subregion.setdefault(c.subregion, []).append(c)
    for c in countries:
        peers = [o for o in by_subregion[c.subregion] if o.name != c.name] or [
            o for o in countries if o is not c
        ]
        for other in rng.sample(peers, min(2, len(peers))):
            a, b = (c, other) if rng.random() < 0.5 else (other, c)
            if a.population != b.population:
                win = max(a, b, key=lambda x: x.population)
                make.add(
                    f"Which country has the larger population, {a.name} or {b.name}?",
                    _names(win),
                    "comparison",
                    "population",
                    (ppl[a.name], ppl[b.name]),
                )
            if a.area_km2 != b.area_km2:
                win = max(a, b, key=lambda x: x.area_km2)
                make.add(
                    f"Which country has the larger area, {a.name} or {b.name}?",
                    _names(win),
                    "comparison",
                    "area",
                    (geo[a.name], geo[b.name]),
                )
    dated = [e for e in elements if e.discovery_year is not None]
    for e in elements:
        for other in rng.sample([o for o in elements if o is not e], 2):
            a, b = (e, other) if rng.random() < 0.5 else (other, e)
            win = max(a, b, key=lambda x: x.atomic_number)
            make.add(
                f"Which element has the higher atomic number, {a.name.lower()} or {b.name.lower()}?",
                [win.name, win.symbol],
                "comparison",
                "atomic_number",
                (props[a.name], props[b.name]),
            )
        if e.discovery_year is not None:
            for other in rng.sample([o for o in dated if o is not e], 2):
                a, b = (e, other) if rng.random() < 0.5 else (other, e)
                if a.discovery_year == b.discovery_year:
                    continue
                win = min(a, b, key=lambda x: x.discovery_year)
                make.add(
                    f"Which element was discovered earlier, {a.name.lower()} or {b.name.lower()}?",
                    [win.name, win.symbol],
                    "comparison",
                    "discovery_year",
                    (hist[a.name], hist[b.name]),
                )
    return make.questions


_CORPUS: Corpus | None = None
_CORPUS_LOCK = threading.Lock()


def get_corpus() -> Corpus:
    """The corpus, built on first use and shared by the whole process."""
    global _CORPUS
    with _CORPUS_LOCK:
        if _CORPUS is None:
            countries, elements = load_countries(), load_elements()
            _CORPUS = Corpus(
                build_passages(countries, elements), build_questions(countries, elements), data_versions()
            )
        return _CORPUS
