"""Tolerant accessors over raw YAML data.

Semantic checks run even when the model did not build, so they must accept any
shape and simply skip what is not there; pydantic reports the shape errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from convoy.policy.source import FieldPath


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
    """A boolean as the (strict) model reads it; the default for anything else."""
    return value if isinstance(value, bool) else default
