"""The skill bank: markdown skill files for one environment family, split into retrievable entries.

A family ("household", "textworld", "searchqa") has one ``general.md`` (skills for every task of
the family) and one file per task type (``heat.md``, ``cooking.md``, ``multi_hop.md``...). Each file
holds several entries, one per ``## <title>`` section, so a retriever can hand out whole files or
single entries. The built-in skills ship inside the package (``sdar/skills/texts/<family>/*.md``)
and are read through :mod:`importlib.resources`, so they load from an installed wheel too; users
bring their own with :meth:`SkillBank.from_directory`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

GENERAL = "general"
"""The name of the file whose skills apply to every task type of a family."""

_TEXTS_PACKAGE = "sdar.skills"
_TEXTS_DIR = "texts"
_FENCE = re.compile(r"^\s*(```|~~~)")


def env_family(env_name: str) -> str:
    """The environment family of an env name: ``"textworld:cooking"`` -> ``"textworld"``."""
    if not isinstance(env_name, str) or not env_name.strip():
        raise ValueError(f"environment name must be a non-empty string; got {env_name!r}")
    return env_name.partition(":")[0].strip().lower()


def env_variant(env_name: str | None) -> str | None:
    """The variant of an env name (``"textworld:cooking"`` -> ``"cooking"``), or None if it has none."""
    if not env_name:
        return None
    variant = env_name.partition(":")[2].strip().lower()
    return variant or None


@dataclass(frozen=True)
class SkillEntry:
    """One ``## <title>`` section of a skill file."""

    file: str
    title: str
    body: str

    @property
    def text(self) -> str:
        """The entry as markdown: its heading and its body."""
        return f"## {self.title}\n{self.body}".rstrip()


@dataclass(frozen=True)
class SkillFile:
    """A whole skill file: its name (the file stem, e.g. ``"heat"``), its text and its entries."""

    name: str
    text: str
    entries: tuple[SkillEntry, ...]

    @classmethod
    def parse(cls, name: str, markdown: str) -> SkillFile:
        """Splits ``markdown`` into entries at ``## `` headings (outside fenced code blocks).

        Text before the first ``## `` heading (other than the ``# `` file title) becomes an entry
        titled after the file, so no skill text is lost to entry-level retrieval.
        """
        text = markdown.strip()
        file_title = name.replace("_", " ")
        sections: list[tuple[str, list[str]]] = []
        current_title: str | None = None
        current: list[str] = []
        in_fence = False
        for line in text.splitlines():
            if _FENCE.match(line):
                in_fence = not in_fence
            if not in_fence and line.startswith("## "):
                sections.append((current_title or file_title, current))
                current_title, current = line[3:].strip(), []
            elif not in_fence and line.startswith("# ") and current_title is None and not any(current):
                file_title = line[2:].strip() or file_title
            else:
                current.append(line)
        sections.append((current_title or file_title, current))
        entries = tuple(
            SkillEntry(name, title, "\n".join(lines).strip())
            for title, lines in sections
            if "\n".join(lines).strip()
        )
        return cls(name, text, entries)


class SkillBank:
    """The skill files of one environment family.

    Args:
        family: the environment family the skills are for (``"household"``...).
        files: file name (stem) -> markdown text; ``"general"`` is the family-wide file.
    """

    def __init__(self, family: str, files: Mapping[str, str]) -> None:
        if not files:
            raise ValueError(f"a skill bank needs at least one skill file; got none for {family!r}")
        self.family = family
        parsed = {name: SkillFile.parse(name, text) for name, text in sorted(files.items())}
        empty = [name for name, skill_file in parsed.items() if not skill_file.text]
        if empty:
            raise ValueError(f"empty skill file(s) in the {family!r} bank: {', '.join(empty)}")
        self._files = parsed

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, env_name: str) -> SkillBank:
        """The built-in skills for an environment (or family) name, e.g. ``"textworld:cooking"``."""
        return _builtin_bank(env_family(env_name))

    @classmethod
    def from_directory(cls, path: str | Path, family: str | None = None) -> SkillBank:
        """Reads every ``*.md`` file in ``path`` (not recursively); the file stem names the file.

        Name the family-wide file ``general.md`` and each task-type file after its task type
        (``heat.md``, ``cooking.md``...) so the retrievers can pair tasks with files. ``family``
        defaults to the directory name.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"skill directory {str(directory)!r} does not exist")
        files = {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.md"))}
        if not files:
            raise ValueError(f"no *.md skill files in {str(directory)!r}")
        return cls(family or directory.name, files)

    @staticmethod
    def builtin_families() -> list[str]:
        """The environment families that have built-in skills."""
        return list(_builtin_families())

    # ---- access -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """All file names, ``general`` first."""
        return sorted(self._files, key=lambda name: (name != GENERAL, name))

    @property
    def type_names(self) -> list[str]:
        """The task-type file names (every file but ``general``)."""
        return [name for name in self.names if name != GENERAL]

    @property
    def general(self) -> SkillFile | None:
        """The family-wide skill file, if the bank has one."""
        return self._files.get(GENERAL)

    @property
    def files(self) -> list[SkillFile]:
        """All skill files, ``general`` first."""
        return [self._files[name] for name in self.names]

    @property
    def entries(self) -> list[SkillEntry]:
        """Every entry of every file, ``general`` first."""
        return [entry for skill_file in self.files for entry in skill_file.entries]

    def file(self, name: str) -> SkillFile:
        """The skill file called ``name``; KeyError naming the available files otherwise."""
        try:
            return self._files[name]
        except KeyError:
            raise KeyError(
                f"no skill file {name!r} in the {self.family!r} bank; have: {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def __len__(self) -> int:
        return len(self._files)

    def text(self, names: Iterable[str] | None = None, *, with_general: bool = False) -> str:
        """The markdown of the named files (all files when ``names`` is None), joined by blank lines.

        ``with_general`` puts the ``general`` file first (once) when the bank has one.
        """
        chosen = self.names if names is None else list(names)
        if with_general and self.general is not None:
            chosen = [GENERAL, *(name for name in chosen if name != GENERAL)]
        seen: set[str] = set()
        parts = []
        for name in chosen:
            if name not in seen:
                seen.add(name)
                parts.append(self.file(name).text)
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return f"SkillBank(family={self.family!r}, files={self.names}, entries={len(self.entries)})"


@functools.cache
def _builtin_families() -> tuple[str, ...]:
    root = resources.files(_TEXTS_PACKAGE).joinpath(_TEXTS_DIR)
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))))


@functools.cache
def _builtin_bank(family: str) -> SkillBank:
    root = resources.files(_TEXTS_PACKAGE).joinpath(_TEXTS_DIR).joinpath(family)
    if not root.is_dir():
        raise ValueError(
            f"no built-in skills for environment family {family!r}; "
            f"built-in: {', '.join(SkillBank.builtin_families())} "
            "(bring your own with SkillBank.from_directory)"
        )
    files = {
        p.name[: -len(".md")]: p.read_text(encoding="utf-8")
        for p in root.iterdir()
        if p.is_file() and p.name.endswith(".md")
    }
    return SkillBank(family, files)
