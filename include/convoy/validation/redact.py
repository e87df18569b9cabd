"""Keep values out of results: sensitive-column heuristic, truncation, JSON-safe values."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

MAX_EXAMPLES = 5
MAX_VALUE_CHARS = 64
MAX_LIST_ITEMS = 20
REDACTED = "<redacted>"

# Substrings of a column name (lowercased, separators removed) that mark it sensitive.
_SENSITIVE_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "creditcard",
    "cardnumber",
    "socialsecurity",
    "sessionid",
    "credential",
)
# Whole words (after splitting on separators and camelCase) that mark it sensitive.
_SENSITIVE_WORDS = frozenset({"ssn", "pwd", "pin", "cvv", "cvc", "iban", "otp", "salt", "dob"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def is_sensitive(column: str, extra: Iterable[str] = ()) -> bool:
    """Whether a column name looks like it holds secrets or personal identifiers.

    >>> is_sensitive("password_hash"), is_sensitive("userSSN"), is_sensitive("status")
    (True, True, False)
    """
    folded = _WORD_SPLIT.sub("", column).lower()
    if any(part in folded for part in (*_SENSITIVE_PARTS, *(e.lower() for e in extra))):
        return True
    words = {w.lower() for w in _WORD_SPLIT.split(_CAMEL.sub("_", column)) if w}
    words |= {w.lower() for w in _WORD_SPLIT.split(column) if w}
    return bool(words & _SENSITIVE_WORDS) or any(w.endswith("ssn") and len(w) <= 8 for w in words)


def columns_of(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The column names an expectation reads (``column``, ``column_A/B``, ``column_list``)."""
    out: list[str] = []
    for key in ("column", "column_A", "column_B"):
        value = kwargs.get(key)
        if isinstance(value, str):
            out.append(value)
    listed = kwargs.get("column_list")
    if isinstance(listed, list | tuple):
        out.extend(str(c) for c in listed)
    return tuple(dict.fromkeys(out))


def touches_sensitive(kwargs: Mapping[str, Any], extra: Iterable[str] = ()) -> bool:
    extra = tuple(extra)
    return any(is_sensitive(c, extra) for c in columns_of(kwargs))


def truncate(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def jsonable(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy: long strings truncated, long lists cut, odd types as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return truncate(value, 200)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | bytes):
        return truncate(str(value))
    if depth > 4:
        return truncate(repr(value))
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_LIST_ITEMS]
        return {str(k): jsonable(v, depth=depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out = [jsonable(v, depth=depth + 1) for v in seq[:MAX_LIST_ITEMS]]
        if len(seq) > MAX_LIST_ITEMS:
            out.append(f"… {len(seq) - MAX_LIST_ITEMS} more")
        return out
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return jsonable(item(), depth=depth + 1)
        except (TypeError, ValueError):
            pass
    return truncate(str(value))


def example_value(value: Any) -> Any:
    """One unexpected value as shown in results: scalars kept, text truncated."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return truncate(value)
    if isinstance(value, Mapping | list | tuple):
        return truncate(repr(jsonable(value)))
    return truncate(str(jsonable(value)))


def examples(values: Iterable[Any], limit: int = MAX_EXAMPLES) -> tuple[Any, ...]:
    """At most ``limit`` distinct example values, in order of first appearance."""
    out: list[Any] = []
    seen: set[str] = set()
    for raw in values:
        value = example_value(raw)
        key = repr(value)
        if key in seen:
            continue
        seen.add(key)
        out.append(value)
        if len(out) >= limit:
            break
    return tuple(out)


def scrub(message: str, secrets: Iterable[str | None]) -> str:
    """An error message with the given secrets replaced and its length bounded."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return truncate(" ".join(message.split()), 300)
