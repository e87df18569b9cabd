"""Datastore engines behind one small interface, looked up by datastore ``type``.

Every engine implements :class:`convoy.engines.base.DatastoreEngine`
(``plan``, ``backup``, ``migrate``, ``partitions``, ``transform``, ``revert``,
``history``), each stage taking a :class:`~convoy.engines.base.RunContext`.
Engines never import Airflow: the Airflow layer (``convoy.airflow.datastores``)
builds their connection from the policy's Airflow connection and calls
:func:`get_engine` with it.

The built-in kinds are imported lazily (psycopg / pymongo are only needed by a
task that uses them). Adding a kind means adding one module and one entry in
:data:`BUILTIN` (or calling :func:`register`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from convoy.engines.base import DatastoreEngine

#: The lifecycle every engine implements (kept under its historical name).
Engine = DatastoreEngine

#: ``factory(*args, **kwargs) -> DatastoreEngine``; the arguments depend on the kind:
#: postgres ``(conninfo, PostgresConfig | None)``,
#: mongo ``(client, database, MongoConfig | None)``.
EngineFactory = Callable[..., DatastoreEngine]

#: Built-in kinds: ``module:attribute`` of the engine class, imported on first use.
BUILTIN: dict[str, str] = {
    "postgres": "convoy.engines.postgres:PostgresEngine",
    "mongo": "convoy.engines.mongo:MongoEngine",
}


class EngineUnavailable(Exception):
    """No engine is implemented (or importable) for a datastore type."""


_REGISTRY: dict[str, EngineFactory] = {}


def register(kind: str, factory: EngineFactory) -> None:
    """Make ``factory`` the engine of datastore ``kind`` (later registrations win)."""
    _REGISTRY[kind] = factory


def available() -> tuple[str, ...]:
    return tuple(sorted({*BUILTIN, *_REGISTRY}))


def get_engine(kind: str) -> EngineFactory:
    """The engine factory (class) of datastore ``kind``; raises :class:`EngineUnavailable`."""
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    target = BUILTIN.get(kind)
    if target is None:
        raise EngineUnavailable(f"datastore type {kind!r} is not implemented")
    module, _, attr = target.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise EngineUnavailable(
            f"engine of datastore type {kind!r} cannot be imported: {exc}"
        ) from exc
    return factory  # type: ignore[no-any-return]


__all__ = [
    "BUILTIN",
    "DatastoreEngine",
    "Engine",
    "EngineFactory",
    "EngineUnavailable",
    "available",
    "get_engine",
    "register",
]
