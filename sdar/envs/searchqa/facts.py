"""Fact tables for searchqa, read from data shipped inside PyPI packages (no download):
countries from ``countryinfo`` (its JSON files) and chemical elements from ``mendeleev`` (its
bundled SQLite database, read with the standard ``sqlite3`` module to keep loading fast).

Only entries with every field the passages use are kept, and a few obsolete duplicates in
countryinfo's data (Burma beside Myanmar, Serbia and Montenegro beside Serbia) are dropped, so
that every fact has one answer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

#: countryinfo entries left out: superseded duplicates of other entries.
EXCLUDED_COUNTRIES = frozenset({"Burma", "Serbia and Montenegro"})


@dataclass(frozen=True)
class Country:
    """One country (or territory) and the facts the passages state about it."""

    name: str
    aliases: tuple[str, ...]  # other names that count as the same answer (long forms, English variants)
    capital: str
    region: str  # e.g. "Americas"
    subregion: str  # e.g. "Latin America and the Caribbean"
    population: int
    area_km2: int
    currency_codes: tuple[str, ...]  # ISO 4217, e.g. ("PEN",)
    calling_codes: tuple[str, ...]  # without "+", e.g. ("51",)
    demonym: str | None  # e.g. "Peruvian"
    tlds: tuple[str, ...]  # e.g. (".pe",)
    neighbours: tuple[str, ...]  # names of the bordering countries kept in the table


@dataclass(frozen=True)
class Element:
    """One chemical element and the facts the passages state about it."""

    name: str
    symbol: str
    atomic_number: int
    atomic_weight: float
    period: int
    group: int | None  # 1-18; None for the lanthanides/actinides outside the groups
    block: str  # "s", "p", "d" or "f"
    series: str | None  # e.g. "Transition metals"
    discovery_year: int | None  # None when known since antiquity or not recorded
    discoverers: str | None
    discovery_locations: tuple[str, ...]  # e.g. ("England", "Sweden")


def data_versions() -> dict[str, str]:
    """Versions of the packages the facts come from (they key any cached corpus)."""
    return {name: version(name) for name in ("countryinfo", "mendeleev")}


def _is_code(spelling: str) -> bool:
    return spelling.isupper() and len(spelling) <= 3


def _ascii_name(name: str) -> bool:
    return all(ord(ch) < 128 for ch in name)


def load_countries() -> list[Country]:
    """Countries with a capital, population, area, currency and region, sorted by name."""
    from countryinfo import CountryInfo

    raw = CountryInfo.all()
    by_alpha3 = {info.get("ISO", {}).get("alpha3"): info.get("name") for info in raw.values()}
    keep = {}
    for info in raw.values():
        name = info.get("name")
        capital = info.get("capital")
        needed = ("population", "area", "currencies", "region", "subregion")
        if not name or name in EXCLUDED_COUNTRIES or not isinstance(capital, str) or not capital:
            continue
        if not all(info.get(key) for key in needed):
            continue
        keep[name] = info
    countries = []
    for name, info in sorted(keep.items()):
        neighbours = sorted(
            {by_alpha3[code] for code in info.get("borders") or [] if by_alpha3.get(code) in keep} - {name}
        )
        aliases = tuple(
            dict.fromkeys(
                s.strip()
                for s in info.get("altSpellings") or []
                if s.strip() and not _is_code(s.strip()) and _ascii_name(s.strip()) and s.strip() != name
            )
        )
        countries.append(
            Country(
                name=name,
                aliases=aliases,
                capital=info["capital"].strip(),
                region=info["region"].strip(),
                subregion=info["subregion"].strip(),
                population=int(info["population"]),
                area_km2=round(float(info["area"])),
                currency_codes=tuple(info["currencies"]),
                calling_codes=tuple(
                    c.strip().lstrip("+") for c in info.get("callingCodes") or [] if c.strip()
                ),
                demonym=(info.get("demonym") or "").strip() or None,
                tlds=tuple(t.strip() for t in info.get("tld") or [] if t.strip() and _ascii_name(t.strip())),
                neighbours=tuple(neighbours),
            )
        )
    return countries


def _mendeleev_db() -> Path:
    """Path of mendeleev's bundled ``elements.db``, found without importing mendeleev (slow)."""
    spec = importlib.util.find_spec("mendeleev")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("searchqa needs the 'mendeleev' package (pip install mendeleev)")
    path = Path(next(iter(spec.submodule_search_locations))) / "elements.db"
    if not path.is_file():
        raise FileNotFoundError(f"mendeleev's database is missing: {path}")
    return path


def load_elements() -> list[Element]:
    """The 118 elements, sorted by atomic number."""
    uri = f"file:{_mendeleev_db()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        series = dict(db.execute("SELECT id, name FROM series"))
        rows = db.execute(
            "SELECT atomic_number, symbol, name, atomic_weight, period, group_id, block, series_id,"
            " discovery_year, discoverers, discovery_location FROM elements ORDER BY atomic_number"
        ).fetchall()
    elements = []
    for number, symbol, name, weight, period, group, block, series_id, year, discoverers, location in rows:
        discoverers = (discoverers or "").strip().rstrip(".") or None
        if discoverers and "ancients" in discoverers.lower():
            discoverers = None
        locations = tuple(part.strip() for part in (location or "").split("/") if part.strip())
        elements.append(
            Element(
                name=name,
                symbol=symbol,
                atomic_number=int(number),
                atomic_weight=float(weight),
                period=int(period),
                group=int(group) if group is not None else None,
                block=block,
                series=series.get(series_id),
                discovery_year=int(year) if year is not None else None,
                discoverers=discoverers,
                discovery_locations=locations,
            )
        )
    return elements
