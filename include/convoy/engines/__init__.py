"""Datastore engines behind one small interface, looked up by datastore ``type``.

Each engine module registers itself with :func:`register`. Until a kind has an
engine, :func:`get_engine` raises :class:`EngineUnavailable` with a clear message,
so a policy using it fails at that step instead of doing something half-way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class EngineUnavailable(Exception):
    """No engine is implemented (or importable) for a datastore type."""


class Engine(Protocol):
    """Lifecycle of a datastore step; every method honours ``dry_run`` by describing only."""

    def backup(self, *, dry_run: bool = False) -> dict[str, Any]: ...
    def migrate(self, *, dry_run: bool = False) -> dict[str, Any]: ...
    def transform(self, *, dry_run: bool = False) -> dict[str, Any]: ...
    def validate(self, *, dry_run: bool = False) -> dict[str, Any]: ...
    def revert(self, *, dry_run: bool = False) -> dict[str, Any]: ...


EngineFactory = Callable[..., Engine]

_REGISTRY: dict[str, EngineFactory] = {}


def register(kind: str, factory: EngineFactory) -> None:
    """Make ``factory`` the engine of datastore ``kind`` (later registrations win)."""
    _REGISTRY[kind] = factory


def available() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_engine(kind: str) -> EngineFactory:
    """The engine factory of datastore ``kind``; raises :class:`EngineUnavailable`."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise EngineUnavailable(f"datastore type {kind!r} is not implemented yet") from None


__all__ = ["Engine", "EngineFactory", "EngineUnavailable", "available", "get_engine", "register"]
