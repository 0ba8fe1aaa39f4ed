"""Registers the environments that ship with sdar. Each factory imports its module on first use,
so an optional dependency (textworld, bm25s) is only needed by the environment that uses it."""

from __future__ import annotations

from .base import register_env


def _household(**kwargs):
    from .household import HouseholdEnv

    return HouseholdEnv(**kwargs)


def _textworld(variant: str = "cooking", **kwargs):
    from .textworld_env import TextWorldEnv

    return TextWorldEnv(kind=variant, **kwargs)


def _searchqa(**kwargs):
    from .searchqa import SearchQAEnv

    return SearchQAEnv(**kwargs)


register_env("household", _household)
register_env("textworld", _textworld)
register_env("searchqa", _searchqa)
