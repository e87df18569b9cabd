"""One scan per table: the common expectations computed by one aggregate query, judged in convoy.

GX compiles each expectation to its own queries (a count, a sample, a group
by), so five expectations on a table are five or more full scans. For the
expectations listed in :data:`SUPPORTED`, convoy builds **one** ``SELECT`` of
aggregates per table (``count(*) FILTER (WHERE ...)``, ``min``/``max``/``avg``/
``sum``, ``count(DISTINCT ...)``), reads it in one scan, and evaluates the
verdicts with GX's rules (``mostly`` over the non-null rows, nulls ignored by
the column map expectations, ``strict_min``/``strict_max`` bounds). Only a
failed expectation costs more: its examples are read with
``SELECT col ... WHERE <unexpected> LIMIT 5`` (GX's own sample query), and a
failed uniqueness its exact count (rows in duplicated groups, as GX counts);
a column with a unique single-column index needs no work at all for uniqueness.

Outcomes equal the GX path's (verdict, observed value, element / unexpected
counts, examples); ``tests/integration/validation/test_validation_onepass.py``
runs both on the same table. Anything else (other types, ``row_condition``,
bounds that are not plain numbers, SQL that fails, such as a regex on a
non-text column) is left to GX. No GX import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from convoy.validation.gx_runtime import PlannedExpectation
from convoy.validation.models import ExpectationOutcome
from convoy.validation.redact import MAX_EXAMPLES, examples

#: Arguments that change nothing in the verdict (documentation only).
_PASSIVE = frozenset({"description", "meta", "notes", "severity", "catch_exceptions"})

#: type -> the arguments it may carry to be evaluated here (plus the passive ones).
SUPPORTED: dict[str, frozenset[str]] = {
    "expect_table_row_count_to_be_between": frozenset({"min_value", "max_value"}),
    "expect_table_row_count_to_equal": frozenset({"value"}),
    "expect_column_values_to_not_be_null": frozenset({"column", "mostly"}),
    "expect_column_values_to_be_null": frozenset({"column", "mostly"}),
    "expect_column_values_to_be_in_set": frozenset({"column", "value_set", "mostly"}),
    "expect_column_values_to_not_be_in_set": frozenset({"column", "value_set", "mostly"}),
    "expect_column_values_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max", "mostly"}
    ),
    "expect_column_values_to_match_regex": frozenset({"column", "regex", "mostly"}),
    "expect_column_values_to_not_match_regex": frozenset({"column", "regex", "mostly"}),
    "expect_column_value_lengths_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max", "mostly"}
    ),
    "expect_column_value_lengths_to_equal": frozenset({"column", "value", "mostly"}),
    "expect_column_values_to_be_unique": frozenset({"column", "mostly"}),
    "expect_column_min_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max"}
    ),
    "expect_column_max_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max"}
    ),
    "expect_column_mean_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max"}
    ),
    "expect_column_sum_to_be_between": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max"}
    ),
}

_AGGREGATE_SQL = {
    "expect_column_min_to_be_between": "min",
    "expect_column_max_to_be_between": "max",
    "expect_column_mean_to_be_between": "avg",
    "expect_column_sum_to_be_between": "sum",
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bound(value: Any) -> bool:
    return value is None or _number(value)


def supported(item: PlannedExpectation) -> bool:
    """Whether ``item`` is evaluated by the one-pass query (else GX evaluates it)."""
    allowed = SUPPORTED.get(item.expectation_type)
    if allowed is None:
        return False
    kw = item.kwargs
    if set(kw) - allowed - _PASSIVE:
        return False  # row_condition, windows, ... : GX
    etype = item.expectation_type
    if "column" in allowed and not isinstance(kw.get("column"), str):
        return False
    mostly = kw.get("mostly")
    if mostly is not None and not (_number(mostly) and 0 <= mostly <= 1):
        return False
    if not all(isinstance(kw.get(k, False), bool) for k in ("strict_min", "strict_max")):
        return False
    if etype in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = kw.get("value_set")
        return (
            isinstance(values, list)
            and bool(values)
            and all(v is not None and (_number(v) or isinstance(v, str)) for v in values)
        )
    if etype.endswith("_match_regex"):
        return isinstance(kw.get("regex"), str)
    if etype == "expect_table_row_count_to_equal":
        return isinstance(kw.get("value"), int) and not isinstance(kw.get("value"), bool)
    if etype == "expect_column_value_lengths_to_equal":
        return isinstance(kw.get("value"), int) and not isinstance(kw.get("value"), bool)
    if etype == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        return (lo is not None or hi is not None) and all(_bound(v) for v in (lo, hi))
    if etype == "expect_column_value_lengths_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        return (lo is not None or hi is not None) and all(_bound(v) for v in (lo, hi))
    return all(_bound(kw.get(k)) for k in ("min_value", "max_value"))


@dataclass
class _Plan:
    """The select expressions of one expectation, by name, and how to judge them."""

    item: PlannedExpectation
    columns: dict[str, int]  # name -> position in the SELECT list


def unexpected_condition(item: PlannedExpectation) -> tuple[sql.Composable, list[Any]]:
    """SQL true for a row that is unexpected (nulls excluded where GX ignores them)."""
    kw = item.kwargs
    etype = item.expectation_type
    col = sql.Identifier(str(kw.get("column")))
    if etype == "expect_column_values_to_not_be_null":
        return sql.SQL("{} IS NULL").format(col), []
    if etype == "expect_column_values_to_be_null":
        return sql.SQL("{} IS NOT NULL").format(col), []
    params: list[Any] = []
    test: sql.Composable
    if etype in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = list(kw["value_set"])
        member = sql.SQL("{} IN ({})").format(
            col, sql.SQL(", ").join(sql.Placeholder() for _ in values)
        )
        params.extend(values)
        test = member if etype.endswith("_not_be_in_set") else sql.SQL("NOT ({})").format(member)
    elif etype.endswith("_match_regex"):
        match = sql.SQL("{} ~ %s").format(col)
        params.append(kw["regex"])
        test = match if "_not_match" in etype else sql.SQL("NOT ({})").format(match)
    elif etype == "expect_column_values_to_be_unique":
        raise ValueError("uniqueness has no row condition")
    else:
        value: sql.Composable = col
        if "lengths" in etype:
            value = sql.SQL("length({})").format(col)
        if etype == "expect_column_value_lengths_to_equal":
            test = sql.SQL("NOT ({} = %s)").format(value)
            params.append(kw["value"])
        else:
            parts: list[sql.Composable] = []
            if kw.get("min_value") is not None:
                op = ">" if kw.get("strict_min") else ">="
                parts.append(sql.SQL("{} {} %s").format(value, sql.SQL(op)))
                params.append(kw["min_value"])
            if kw.get("max_value") is not None:
                op = "<" if kw.get("strict_max") else "<="
                parts.append(sql.SQL("{} {} %s").format(value, sql.SQL(op)))
                params.append(kw["max_value"])
            test = sql.SQL("NOT ({})").format(sql.SQL(" AND ").join(parts))
    return sql.SQL("{} IS NOT NULL AND {}").format(col, test), params


def table_columns(conn: Any, table: sql.Composable) -> list[str]:
    """Column names of ``table`` (raises when it does not exist)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table))
        return [d.name for d in cur.description or ()]


def unique_columns(conn: Any, schema: str | None, table: str) -> set[str]:
    """Columns with a unique single-column index (no predicate, no expression)."""
    qualified = f"{schema}.{table}" if schema else table
    query = """
        SELECT a.attname
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid
          AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
    """
    with conn.cursor() as cur:
        cur.execute(query, (sql.Identifier(*qualified.split(".")).as_string(conn),))
        return {str(row[0]) for row in cur.fetchall()}


def evaluate_table(
    conn: Any,
    schema: str | None,
    table: str,
    items: Sequence[PlannedExpectation],
) -> tuple[dict[int, ExpectationOutcome], list[PlannedExpectation]]:
    """Outcomes of ``items`` on one table from one scan, and the items left to GX.

    Raises the database error when the table cannot be read at all (missing
    table, lost connection): the caller turns it into error outcomes.
    """
    target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    present = set(table_columns(conn, target))
    outcomes: dict[int, ExpectationOutcome] = {}
    todo: list[PlannedExpectation] = []
    for item in items:
        column = item.kwargs.get("column")
        if column is not None and column not in present:
            outcomes[item.index] = _error(
                item, f'The column "{column}" in table {_name(schema, table)} does not exist.'
            )
        else:
            todo.append(item)
    if not todo:
        return outcomes, []
    indexed = unique_columns(conn, schema, table)
    select: list[sql.Composable] = [sql.SQL("count(*)")]
    params: list[Any] = []
    plans: list[_Plan] = []
    seen: dict[str, int] = {}

    def add(expr: sql.Composable, args: Sequence[Any] = ()) -> int:
        key = expr.as_string(conn) + repr(list(args))
        if key not in seen:
            seen[key] = len(select)
            select.append(expr)
            params.extend(args)
        return seen[key]

    for item in todo:
        etype = item.expectation_type
        column = item.kwargs.get("column")
        cols: dict[str, int] = {}
        if column is not None:
            ident = sql.Identifier(str(column))
            cols["nonnull"] = add(sql.SQL("count({})").format(ident))
        if etype in _AGGREGATE_SQL:
            func = sql.SQL(_AGGREGATE_SQL[etype])
            cols["value"] = add(sql.SQL("{}({})").format(func, sql.Identifier(str(column))))
        elif etype == "expect_column_values_to_be_unique":
            if column not in indexed:
                cols["distinct"] = add(
                    sql.SQL("count(DISTINCT {})").format(sql.Identifier(str(column)))
                )
        elif column is not None:
            cond, args = unexpected_condition(item)
            cols["unexpected"] = add(sql.SQL("count(*) FILTER (WHERE {})").format(cond), args)
        plans.append(_Plan(item, cols))
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), target)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone()
    except Exception:  # e.g. a regex on a non-text column: GX words the error per expectation
        conn.rollback()
        return outcomes, todo
    assert row is not None
    rows = int(row[0])
    for plan in plans:
        outcomes[plan.item.index] = _judge(conn, target, plan, row, rows)
    return outcomes, []


def _judge(
    conn: Any, target: sql.Composable, plan: _Plan, row: Sequence[Any], rows: int
) -> ExpectationOutcome:
    item = plan.item
    kw = item.kwargs
    etype = item.expectation_type
    if etype == "expect_table_row_count_to_be_between":
        return _aggregate(item, rows, within(rows, kw))
    if etype == "expect_table_row_count_to_equal":
        return _aggregate(item, rows, rows == kw["value"])
    if etype in _AGGREGATE_SQL:
        value = row[plan.columns["value"]]
        ok = value is not None and within(value, kw)
        return _aggregate(item, value, ok)
    nonnull = int(row[plan.columns["nonnull"]])
    if etype in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_null"):
        considered = rows
        unexpected = int(row[plan.columns["unexpected"]])
    elif etype == "expect_column_values_to_be_unique":
        considered = nonnull
        distinct = nonnull if "distinct" not in plan.columns else row[plan.columns["distinct"]]
        unexpected = 0 if int(distinct) == nonnull else _duplicated_rows(conn, target, item)
    else:
        considered = nonnull
        unexpected = int(row[plan.columns["unexpected"]])
    mostly = float(kw.get("mostly", 1.0))
    success = considered == 0 or (considered - unexpected) / considered >= mostly
    sample: tuple[Any, ...] = ()
    if unexpected and not item.sensitive:
        sample = examples(_sample(conn, target, item))
    return ExpectationOutcome(
        suite=item.suite,
        expectation_type=etype,
        kwargs=item.kwargs,
        success=success,
        observed_value=None,
        unexpected_count=unexpected,
        unexpected_examples=sample,
        on_failure=item.on_failure,
        element_count=rows,
        redacted=item.sensitive,
    )


def within(value: Any, kw: Mapping[str, Any]) -> bool:
    """GX's bounds: ``min_value``/``max_value`` inclusive unless ``strict_min``/``strict_max``."""
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and (value <= lo if kw.get("strict_min") else value < lo):
        return False
    return not (hi is not None and (value >= hi if kw.get("strict_max") else value > hi))


def _aggregate(item: PlannedExpectation, value: Any, success: bool) -> ExpectationOutcome:
    return ExpectationOutcome(
        suite=item.suite,
        expectation_type=item.expectation_type,
        kwargs=item.kwargs,
        success=bool(success),
        observed_value="<redacted>" if item.sensitive and value is not None else value,
        on_failure=item.on_failure,
        redacted=item.sensitive,
    )


def _duplicated_rows(conn: Any, target: sql.Composable, item: PlannedExpectation) -> int:
    col = sql.Identifier(str(item.kwargs["column"]))
    query = sql.SQL(
        "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {t} WHERE {c} IS NOT NULL"
        " GROUP BY {c} HAVING count(*) > 1) AS d"
    ).format(t=target, c=col)
    with conn.cursor() as cur:
        cur.execute(query)
        found = cur.fetchone()
    return int(found[0]) if found else 0


def _sample(conn: Any, target: sql.Composable, item: PlannedExpectation) -> list[Any]:
    """At most five unexpected values, as GX samples them (``LIMIT``, table order)."""
    col = sql.Identifier(str(item.kwargs["column"]))
    if item.expectation_type == "expect_column_values_to_be_unique":
        # GX's shape: a window per value, so the sample comes in the window's order
        query = sql.SQL(
            "SELECT {c} FROM (SELECT {c}, count(*) OVER (PARTITION BY {c}) AS n FROM {t}) AS d"
            " WHERE {c} IS NOT NULL AND n > 1 LIMIT {n}"
        ).format(c=col, t=target, n=sql.Literal(MAX_EXAMPLES))
        params: list[Any] = []
    else:
        cond, params = unexpected_condition(item)
        query = sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
            col, target, cond, sql.Literal(MAX_EXAMPLES)
        )
    with conn.cursor() as cur:
        cur.execute(query, params)
        return [r[0] for r in cur.fetchall()]


def _name(schema: str | None, table: str) -> str:
    return f"{schema}.{table}" if schema else table


def _error(item: PlannedExpectation, message: str) -> ExpectationOutcome:
    return ExpectationOutcome(
        suite=item.suite,
        expectation_type=item.expectation_type,
        kwargs=item.kwargs,
        success=False,
        on_failure=item.on_failure,
        redacted=item.sensitive,
        error=message,
    )
