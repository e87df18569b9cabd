"""Great Expectations types and arguments, checked at policy load time without importing GX.

Importing great_expectations takes 15-20 s on a busy worker (measured; see
docs/validation.md), far too slow for DAG parsing. This module therefore keeps
a **static catalog** of GX's expectation registry (type -> kind, required and
optional arguments) in :mod:`convoy.policy.expectation_catalog`, generated from
the installed GX by::

    python -m convoy.policy.expectations --regenerate

and a unit test (``tests/unit/validation/test_expectation_catalog.py``) fails
when it no longer equals GX's registry (after a GX upgrade).

:func:`check_expectation` catches unknown types (suggesting the closest one),
unknown or missing arguments, and types a MongoDB datastore cannot evaluate.
With ``deep=True`` it also instantiates the GX class, so pydantic checks the
argument values (``mostly: 2``, ``value_set: abc``...): that imports GX and is
meant for ``convoy validate`` / CI, not for DAG parsing.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from convoy.policy.expectation_catalog import CATALOG as _CATALOG
from convoy.policy.expectation_catalog import Kind

#: Fields of every GX expectation that a policy may not set (run-time plumbing).
INTERNAL_FIELDS = frozenset(
    {"batch_id", "id", "rendered_content", "result_format", "catch_exceptions"}
)

#: Row-wise expectations a MongoDB collection cannot be validated with batch by
#: batch, because a row's result depends on other rows (order, global stats).
MONGO_UNBATCHABLE = frozenset(
    {
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_decreasing",
        "expect_column_value_z_scores_to_be_less_than",
        "expect_column_values_to_not_be_outliers",
        "expect_compound_columns_to_be_unique",
    }
)

#: Expectations a MongoDB collection is validated with by a server-side
#: aggregation (count / $group) instead of per-batch pandas.
MONGO_AGGREGATIONS = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_column_min_to_be_between",
        "expect_column_max_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_values_to_be_unique",
    }
)


def catalog() -> Mapping[str, tuple[Kind, tuple[str, ...], tuple[str, ...]]]:
    """type -> (kind, required arguments, optional arguments), from the static catalog."""
    return _CATALOG


@functools.cache
def known_expectation_types() -> frozenset[str]:
    """Every expectation type of the pinned GX (static; no GX import)."""
    return frozenset(_CATALOG)


def expectation_kind(expectation_type: str) -> Kind | None:
    entry = _CATALOG.get(expectation_type)
    return entry[0] if entry else None


def mongo_support(expectation_type: str) -> Literal["batched", "aggregation"] | None:
    """How a MongoDB collection is validated with this type, or None if it cannot be."""
    if expectation_type in MONGO_AGGREGATIONS:
        return "aggregation"
    if expectation_kind(expectation_type) == "map" and expectation_type not in MONGO_UNBATCHABLE:
        return "batched"
    return None


def check_expectation(
    expectation_type: str,
    kwargs: Any,
    *,
    datastore_kind: Literal["postgres", "mongo"] | None = None,
    deep: bool = False,
) -> str | None:
    """An error message for a bad expectation entry of a policy, or None when it is fine."""
    entry = _CATALOG.get(expectation_type)
    if entry is None:
        close = difflib.get_close_matches(expectation_type, list(_CATALOG), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown expectation type '{expectation_type}'{hint}"
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        return f"the arguments of {expectation_type} must be a mapping, not {type(kwargs).__name__}"
    _kind, required, optional = entry
    allowed = (*required, *optional)
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
            return f"unknown argument '{key}' for {expectation_type} ({hint})"
    missing = [key for key in required if key not in kwargs]
    if missing:
        return f"{expectation_type} needs argument(s): {', '.join(missing)}"
    column_problem = _column_problem(kwargs)
    if column_problem:
        return column_problem
    if datastore_kind == "mongo":
        message = _mongo_problem(expectation_type, kwargs)
        if message:
            return message
    if deep:
        return _deep_check(expectation_type, kwargs)
    return None


_COLUMN_ARGUMENTS = ("column", "column_A", "column_B", "column_list", "column_set")


def _column_problem(kwargs: Mapping[str, Any]) -> str | None:
    """Columns are plain identifiers (dotted for nested document fields), like every name."""
    from convoy.policy.names import identifier

    for key in _COLUMN_ARGUMENTS:
        value = kwargs.get(key)
        columns = value if isinstance(value, list) else [value] if value is not None else []
        for column in columns:
            if not isinstance(column, str):
                return f"{key}: a column name must be a string, not {type(column).__name__}"
            for part in column.split("."):
                message = identifier(part, f"{key} '{column}': column")
                if message:
                    return message
    return None


def _mongo_problem(expectation_type: str, kwargs: Mapping[str, Any]) -> str | None:
    support = mongo_support(expectation_type)
    if support is None:
        supported = ", ".join(sorted(MONGO_AGGREGATIONS))
        return (
            f"{expectation_type} cannot be evaluated on a MongoDB collection: convoy streams "
            "documents in batches, and this expectation needs the whole collection at once "
            f"(row-wise expectations and {supported} are supported)"
        )
    if support == "aggregation" and kwargs.get("row_condition"):
        return f"row_condition is not supported for {expectation_type} on MongoDB"
    return None


def _deep_check(expectation_type: str, kwargs: Mapping[str, Any]) -> str | None:
    """Instantiate the GX class so pydantic validates the values (imports GX)."""
    from great_expectations.expectations.registry import get_expectation_impl

    import_gx_expectations()
    cls = get_expectation_impl(expectation_type)
    try:
        cls(**dict(kwargs))
    except Exception as exc:  # pydantic.ValidationError and GX's own errors
        detail = " ".join(str(exc).split())
        return f"bad arguments for {expectation_type}: {detail[:400]}"
    return None


def import_gx_expectations() -> None:
    """Import GX quietly (no analytics) so that its registry is filled."""
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations  # noqa: F401


def gx_registry_catalog() -> dict[str, tuple[Kind, tuple[str, ...], tuple[str, ...]]]:
    """The catalog computed from the installed GX (slow: imports GX)."""
    import_gx_expectations()
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import (
        get_expectation_impl,
        list_registered_expectation_implementations,
    )

    out: dict[str, tuple[Kind, tuple[str, ...], tuple[str, ...]]] = {}
    map_bases = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    for name in sorted(list_registered_expectation_implementations()):
        cls = get_expectation_impl(name)
        kind: Kind = "map" if issubclass(cls, map_bases) else "aggregate"
        required: list[str] = []
        optional: list[str] = []
        for field_name, field in cls.__fields__.items():
            if field_name in INTERNAL_FIELDS:
                continue
            (required if field.required else optional).append(field.alias or field_name)
        out[name] = (kind, tuple(required), tuple(sorted(optional)))
    return out


def _render_catalog(entries: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...]]]) -> str:
    lines = ["CATALOG: dict[str, tuple[Kind, tuple[str, ...], tuple[str, ...]]] = {"]
    for name, (kind, required, optional) in sorted(entries.items()):
        lines.append(f"    {name!r}: ({kind!r}, {required!r}, {optional!r}),")
    lines.append("}")
    return "\n".join(lines)


#: The generated module (its block between the BEGIN/END markers is rewritten).
CATALOG_FILE = Path(__file__).with_name("expectation_catalog.py")


def regenerate(path: Path = CATALOG_FILE) -> bool:
    """Rewrite the generated block of the catalogue module from GX; True when it changed."""
    text = path.read_text()
    begin = text.index("# BEGIN GENERATED CATALOG")
    begin = text.index("\n", begin) + 1
    end = text.index("# END GENERATED CATALOG")
    new = text[:begin] + _render_catalog(gx_registry_catalog()) + "\n" + text[end:]
    if new == text:
        return False
    path.write_text(new)
    return True


if __name__ == "__main__":  # pragma: no cover - build-time tool
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m convoy.policy.expectations --regenerate")
    print("catalog updated (run ruff format on it)" if regenerate() else "catalog unchanged")
