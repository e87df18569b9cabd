"""Semantic checks of ``datastores``: identifiers, migrations, transforms, validation, rollback."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from convoy.policy import names
from convoy.policy.expectations import check_expectation
from convoy.policy.migrations import MigrationFile, directory_problem, scan_migrations
from convoy.policy.mongo_checks import check_mongo_filter, check_mongo_update
from convoy.policy.rawdata import flag, mapping, mappings, strings
from convoy.policy.reporter import Reporter
from convoy.policy.source import FieldPath
from convoy.policy.sql_expressions import Slot, expression_problem
from convoy.policy.templates import check_templates

_EXPECTATION = re.compile(r"^expect_[a-z_]+$")


def check_datastores(
    reporter: Reporter,
    data: dict[str, Any],
    services: set[str],
    base_dir: Path,
    *,
    known_expectations: Collection[str] | None = None,
) -> Mapping[str, tuple[MigrationFile, ...]]:
    """Report datastore problems; returns the scanned migrations per datastore name."""
    automatic = flag(mapping(data.get("rollback")).get("automatic"), default=True)
    seen: dict[str, int] = {}
    migrations: dict[str, tuple[MigrationFile, ...]] = {}
    for path, ds in mappings(("datastores",), data.get("datastores")):
        name = ds.get("name")
        if isinstance(name, str):
            _label(reporter, (*path, "name"), name, "datastore name")
            if name in seen:
                reporter.error(
                    (*path, "name"),
                    f"duplicate datastore name '{name}' (first at line {seen[name]})",
                )
            else:
                seen[name] = reporter.doc.value_mark((*path, "name")).line
        check_conn_id(reporter, (*path, "connId"), ds.get("connId"))
        for after_path, svc in strings((*path, "after"), ds.get("after")):
            if svc not in services:
                reporter.error(after_path, f"unknown service '{svc}'{names.suggest(svc, services)}")
        kind = ds.get("type")
        if kind not in ("postgres", "mongo"):
            continue  # pydantic reports the type; the rest depends on it
        backup = ds.get("backup", "none")
        files = _check_migrations(reporter, path, ds, kind, base_dir, automatic, backup)
        if isinstance(name, str):
            # Every datastore gets an entry so consumers can index by name.
            migrations.setdefault(name, files or ())
        if kind == "postgres":
            _check_postgres(reporter, path, ds)
        else:
            _identifier(reporter, (*path, "database"), ds.get("database"), "database")
        _check_transforms(reporter, path, ds, kind)
        _check_validation(reporter, path, ds, kind, known_expectations)
    return migrations


def check_conn_id(reporter: Reporter, path: FieldPath, value: Any) -> None:
    """Every ``*ConnId`` field names an Airflow connection; credentials live there."""
    if isinstance(value, str):
        message = names.conn_id(value, str(path[-1]))
        if message:
            reporter.error(path, message)


def _label(reporter: Reporter, path: FieldPath, value: str, what: str) -> None:
    message = names.dns_label(value, what)
    if message:
        reporter.error(path, message)


def _identifier(reporter: Reporter, path: FieldPath, value: Any, what: str) -> None:
    if isinstance(value, str):
        message = names.identifier(value, what)
        if message:
            reporter.error(path, message)


def _table(reporter: Reporter, path: FieldPath, value: Any) -> None:
    if isinstance(value, str):
        message = names.table_name(value)
        if message:
            reporter.error(path, message)


def _check_postgres(reporter: Reporter, path: FieldPath, ds: dict[str, Any]) -> None:
    for table_path, table in strings((*path, "snapshotTables"), ds.get("snapshotTables")):
        _table(reporter, table_path, table)


def _check_migrations(
    reporter: Reporter,
    path: FieldPath,
    ds: dict[str, Any],
    kind: str,
    base_dir: Path,
    automatic: bool,
    backup: Any,
) -> tuple[MigrationFile, ...] | None:
    relative = ds.get("migrations")
    if not isinstance(relative, str):
        return None
    field = (*path, "migrations")
    unusable = directory_problem(base_dir, relative)
    if unusable is not None:
        reporter.error(field, unusable)
        return None
    files, problems = scan_migrations(
        base_dir / relative, "mongo" if kind == "mongo" else "postgres", root=base_dir
    )
    for problem in problems:
        where = Path(problem.file).name
        reporter.error(field, f"{where}: {problem.message}")
    if automatic and backup == "none":
        for f in files:
            if f.kind == "V" and not f.has_down:
                undo = (
                    f"(U{f.version_text}__*.sql)"
                    if kind == "postgres"
                    else f"(no down(db) in {f.path.name})"
                )
                fix = "add an undo file" if kind == "postgres" else "define down(db)"
                reporter.error(
                    field,
                    f"rollback.automatic is true but migration {f.name} has no undo {undo} "
                    f"and backup is 'none'; {fix} or set backup: snapshot",
                )
    elif backup != "none":
        without = [f.name for f in files if f.kind == "V" and not f.has_down]
        if without:
            fix = "add undo files (U<version>__*.sql)" if kind == "postgres" else "define down(db)"
            reporter.warning(
                field,
                f"{', '.join(without)} {'has' if len(without) == 1 else 'have'} no undo: a "
                "rollback can only restore the backup, and refuses to when the application "
                f"wrote to those tables during the run (it then ends incomplete); {fix} for "
                "a complete rollback under live writes",
            )
    return files


def _check_transforms(reporter: Reporter, path: FieldPath, ds: dict[str, Any], kind: str) -> None:
    seen: dict[str, int] = {}
    for t_path, transform in mappings((*path, "transforms"), ds.get("transforms")):
        name = transform.get("name")
        if isinstance(name, str):
            _label(reporter, (*t_path, "name"), name, "transform name")
            if name in seen:
                reporter.error(
                    (*t_path, "name"),
                    f"duplicate transform name '{name}' (first at line {seen[name]})",
                )
            else:
                seen[name] = reporter.doc.value_mark((*t_path, "name")).line
        batch = transform.get("batchSize")
        if isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch < 100:
            reporter.warning(
                (*t_path, "batchSize"),
                f"batchSize {batch} is small; every batch is one transaction and round trip, "
                "so 100 or more is usually much faster",
            )
        if kind == "postgres":
            _check_sql_transform(reporter, t_path, transform)
        else:
            _identifier(
                reporter, (*t_path, "collection"), transform.get("collection"), "collection"
            )
            check_mongo_filter(reporter, (*t_path, "filter"), transform.get("filter"))
            check_mongo_update(reporter, (*t_path, "update"), transform.get("update"))


def _check_sql_transform(reporter: Reporter, path: FieldPath, transform: dict[str, Any]) -> None:
    _table(reporter, (*path, "table"), transform.get("table"))
    _identifier(reporter, (*path, "key"), transform.get("key"), "key column")
    where = transform.get("where")
    if isinstance(where, str):
        check_templates(reporter, (*path, "where"), where, allowed=True)
        _expression(reporter, (*path, "where"), where, "where")
    for column, expression in mapping(transform.get("set")).items():
        column_path = (*path, "set", column)
        message = names.identifier(column, "column")
        if message:
            reporter.error(column_path, message, at_key=True)
        elif column == transform.get("key"):
            reporter.error(
                column_path,
                f"'{column}' is the transform's key and cannot be set (rows are found again "
                "by it to revert them)",
                at_key=True,
            )
        if isinstance(expression, str):
            check_templates(reporter, column_path, expression, allowed=False)
            _expression(reporter, column_path, expression, "value")


def _expression(reporter: Reporter, path: FieldPath, text: str, slot: Slot) -> None:
    problem = expression_problem(text, slot)
    if problem is not None:
        reporter.error(path, problem.located(text))


def _check_validation(
    reporter: Reporter,
    path: FieldPath,
    ds: dict[str, Any],
    kind: str,
    known_expectations: Collection[str] | None,
) -> None:
    for v_path, validation in mappings((*path, "validation"), ds.get("validation")):
        if kind == "postgres":
            _table(reporter, (*v_path, "table"), validation.get("table"))
        else:
            _identifier(
                reporter, (*v_path, "collection"), validation.get("collection"), "collection"
            )
        for e_path, entry in mappings((*v_path, "expectations"), validation.get("expectations")):
            _check_expectation(reporter, e_path, entry, kind, known_expectations)


def _check_expectation(
    reporter: Reporter,
    path: FieldPath,
    entry: dict[str, Any],
    kind: str,
    known: Collection[str] | None,
) -> None:
    if len(entry) != 1:
        keys = ", ".join(str(k) for k in entry) or "none"
        reporter.error(
            path,
            "an expectation is a mapping with exactly one key, its type (e.g. "
            "expect_column_values_to_not_be_null: {column: x}); "
            f"got {len(entry)} keys: {keys}",
        )
        return
    (name,) = entry
    if not _EXPECTATION.match(name):
        reporter.error(
            (*path, name),
            f"'{name}' is not an expectation type; names look like "
            "expect_column_values_to_not_be_null",
            at_key=True,
        )
    elif known is not None and name not in known:
        # Hook for the Great Expectations type check: callers pass the known types.
        reporter.error(
            (*path, name),
            f"unknown expectation type '{name}'{names.suggest(name, known)}",
            at_key=True,
        )
    elif entry[name] is None or isinstance(entry[name], Mapping):
        # (A non-mapping argument list is already reported by the schema.)
        # The static catalogue of Great Expectations types and arguments: cheap enough
        # for DAG parsing (importing GX itself takes seconds).
        message = check_expectation(
            name, entry[name], datastore_kind="mongo" if kind == "mongo" else "postgres"
        )
        if message:
            reporter.error((*path, name), message, at_key=True)
