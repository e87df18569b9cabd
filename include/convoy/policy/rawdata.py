"""Tolerant accessors over raw YAML data.

Semantic checks run even when the model did not build, so they must accept any
shape and simply skip what is not there; pydantic reports the shape errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter, ValidationError

from convoy.policy.source import FieldPath

_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def mappings(path: FieldPath, value: Any) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    """``(path + (index,), item)`` for every mapping item of a list."""
    for index, item in enumerate(items(value)):
        if isinstance(item, dict):
            yield (*path, index), item


def strings(path: FieldPath, value: Any) -> Iterator[tuple[FieldPath, str]]:
    """``(path + (index,), item)`` for every string item of a list."""
    for index, item in enumerate(items(value)):
        if isinstance(item, str):
            yield (*path, index), item


def flag(value: Any, default: bool) -> bool:
    """A boolean as pydantic would read it (``"yes"`` is true); the default if unreadable."""
    if value is None:
        return default
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return default
