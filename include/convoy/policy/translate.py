"""Pydantic validation errors -> concise, positioned diagnostics.

Pydantic locations use aliases plus union tags (``datastores.0.postgres.connId``,
``update.dict[str,any]``); tags are stripped by walking the raw data alongside
the location, so every message points at a real key in the file.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from convoy.policy.errors import Diagnostic
from convoy.policy.models import API_VERSION, Policy
from convoy.policy.names import suggest
from convoy.policy.reporter import Reporter
from convoy.policy.source import Document, FieldPath, PathElem
from convoy.redaction import redact

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD) without a time",
}


@dataclass(frozen=True)
class _Located:
    """One pydantic error with its location resolved against the raw data."""

    error: ErrorDetails
    path: FieldPath
    # Where a plain (non-discriminated) union member tag was stripped: the
    # union's own path, the member tag and whether the error lies inside it.
    union: tuple[FieldPath, str, bool] | None


def translate(errors: Sequence[ErrorDetails], doc: Document, file: str) -> list[Diagnostic]:
    """Diagnostics for every pydantic error, merged per union and positioned in ``doc``."""
    reporter = Reporter(file, doc)
    located = _resolve_unions([_locate(e, doc.data) for e in errors])
    for item in located:
        if item.error["type"] == "too_short" and _has_inner_error(item.path, located):
            continue  # pydantic counts only the valid items; the inner errors say why
        _report(reporter, item, doc)
    return reporter.diagnostics


def _locate(error: ErrorDetails, data: Any) -> _Located:
    loc = error["loc"]
    path: list[PathElem] = []
    raw = data
    union: tuple[FieldPath, str, bool] | None = None
    for index, elem in enumerate(loc):
        last = index == len(loc) - 1
        if elem == "[key]":
            continue
        found, child = _child(raw, elem)
        if found:
            path.append(elem)
            raw = child
        elif last and error["type"] == "missing":
            path.append(elem)
        elif isinstance(raw, dict) and raw.get("type") == elem:
            continue  # discriminated union tag: the `type:` key already says it
        else:
            union = (tuple(path), str(elem), not last)
    return _Located(error, tuple(path), union)


def _has_inner_error(path: FieldPath, located: list[_Located]) -> bool:
    return any(len(o.path) > len(path) and o.path[: len(path)] == path for o in located)


def _child(raw: Any, elem: int | str) -> tuple[bool, Any]:
    if isinstance(raw, dict) and elem in raw:
        return True, raw[elem]
    if isinstance(raw, list) and isinstance(elem, int) and 0 <= elem < len(raw):
        return True, raw[elem]
    return False, None


def _resolve_unions(items: list[_Located]) -> list[_Located]:
    """Keep the member whose shape matched; else merge members into one type error."""
    out: list[_Located] = []
    groups: dict[FieldPath, list[_Located]] = {}
    for item in items:
        if item.union is None:
            out.append(item)
        else:
            groups.setdefault(item.union[0], []).append(item)
    for union_path, members in groups.items():
        deeper = [m for m in members if m.union is not None and m.union[2]]
        if deeper:
            tag = deeper[0].union[1] if deeper[0].union else ""
            out.extend(m for m in deeper if m.union is not None and m.union[1] == tag)
            continue
        expected = sorted({_EXPECTED.get(m.error["type"], "a valid value") for m in members})
        merged = dict(members[0].error)
        merged["type"] = "union_type"
        merged["msg"] = " or ".join(expected)
        out.append(_Located(typing.cast(ErrorDetails, merged), union_path, None))
    return out


def _report(reporter: Reporter, item: _Located, doc: Document) -> None:
    error, path = item.error, item.path
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "missing":
        parent = path[:-1]
        reporter.at(doc.anchor(parent), parent, f"missing required field '{path[-1]}'")
    elif kind == "union_tag_not_found":
        reporter.at(doc.anchor(path), path, "missing required field 'type' (postgres or mongo)")
    elif kind == "extra_forbidden":
        key = str(path[-1])
        known = _known_keys(error["loc"][:-1])
        hint = suggest(key, known) or (f"; allowed: {', '.join(known)}" if known else "")
        reporter.error(path, f"unknown field '{key}'{hint}", at_key=True)
    elif kind == "union_tag_invalid":
        tags = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))))
        tag = str(ctx.get("tag"))
        hint = suggest(tag, tags.split(", "))
        reporter.error(
            (*path, "type"), f"unknown datastore type '{tag}'; expected one of: {tags}{hint}"
        )
    elif kind == "literal_error":
        reporter.error(path, _literal_message(path, value, str(ctx.get("expected", ""))))
    elif kind == "union_type":
        reporter.error(path, f"expected {error['msg']}, got {_describe(value)}")
    elif kind in _EXPECTED:
        reporter.error(path, f"expected {_EXPECTED[kind]}, got {_describe(value)}")
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        reporter.error(path, _bound_message(kind, ctx, value))
    elif kind == "too_short":
        n = int(ctx.get("min_length", 1))
        reporter.error(path, "must not be empty" if n == 1 else f"needs at least {n} items")
    else:
        message = error["msg"]
        reporter.error(path, message[:1].lower() + message[1:])


def _literal_message(path: FieldPath, value: Any, expected: str) -> str:
    if path == ("apiVersion",):
        return f"unsupported apiVersion {_describe(value)}; this convoy reads '{API_VERSION}'"
    choices = re.findall(r"'([^']*)'", expected)
    listed = ", ".join(f"'{c}'" for c in choices)
    if len(choices) == 1:
        return f"must be {listed}; got {_describe(value)}"
    hint = suggest(value, choices) if isinstance(value, str) else ""
    return f"must be one of {listed}; got {_describe(value)}{hint}"


def _bound_message(kind: str, ctx: dict[str, Any], value: Any) -> str:
    words = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    word, key = words[kind]
    return f"must be {word} {ctx.get(key)}; got {value}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        # Redact before shortening: a cut URI no longer looks like one.
        value = redact(value)
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"'{shown}'"
    if isinstance(value, bytes | bytearray):
        return "binary data (!!binary)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names (YAML spelling) of the model at a raw pydantic location."""
    current: Any = Policy
    for elem in loc:
        current = _step(current, elem)
        if current is None:
            return []
    model = _unwrap(current)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _step(tp: Any, elem: int | str) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if elem in (f.alias, name):
                return f.annotation
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                field = member.model_fields.get("type")
                if field is not None and elem in typing.get_args(field.annotation):
                    return member
    return None
