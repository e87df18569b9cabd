"""PostgreSQL validation, in the database: one scan per table, GX for the rest.

The common expectations (:data:`convoy.validation.onepass.SUPPORTED`) of a
table are computed by one aggregate query and judged by convoy; the others go
to GX's SQL datasource, which compiles each one to SQL (counts, ``LIMIT 5``
samples) over a whole-table batch. GX is imported only when a table has such
an expectation. The table is never loaded into pandas.

A ``progress`` sink (:mod:`convoy.observe.progress`) receives expectations
evaluated of those planned (``<datastore>/validation``), per suite run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convoy.observe.progress import Progress, ProgressSink
from convoy.validation import onepass
from convoy.validation.gx_runtime import (
    REDACTED_FORMAT,
    SITE_NAME,
    SUMMARY_FORMAT,
    PlannedExpectation,
    describe,
    ephemeral_context,
    error_outcome,
    gx_expectation,
    outcome_from_gx,
    plan_suite,
    quiet,
    result_index,
    safe_name,
)
from convoy.validation.models import ExpectationOutcome, ValidationReport
from convoy.validation.redact import scrub
from convoy.validation.results_page import write_results_page

if TYPE_CHECKING:
    from convoy.policy.models import PostgresDatastore

# libpq keywords that map to URL parts; everything else becomes a query parameter.
_URL_PARTS = {"user", "password", "host", "port", "dbname"}


def sqlalchemy_url(conninfo: str) -> tuple[str, str | None]:
    """``postgresql+psycopg://`` URL for a psycopg conninfo or URI, and its password.

    Unix-socket hosts (``host=/tmp/...``), several hosts and options such as
    ``sslmode`` are passed as query parameters, which psycopg understands.
    """
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    host = params.get("host")
    port = params.get("port")
    query = {k: v for k, v in params.items() if k not in _URL_PARTS}
    url_host: str | None = None
    url_port: int | None = None
    if host and not host.startswith("/") and "," not in host:
        url_host = host
        if port and port.isdigit():
            url_port = int(port)
        elif port:
            query["port"] = port
    else:
        if host:
            query["host"] = host
        if port:
            query["port"] = port
    password = params.get("password") or None
    url = URL.create(
        "postgresql+psycopg",
        username=params.get("user") or None,
        password=password,
        host=url_host,
        port=url_port,
        database=params.get("dbname") or None,
        query=query,
    )
    return url.render_as_string(hide_password=False), password


#: Every transaction of the validation session is READ ONLY: GX only counts and
#: samples, so an expectation, or anything it calls, cannot change the data.
READ_ONLY_OPTION = "-c default_transaction_read_only=on"


def read_only_conninfo(conninfo: str) -> str:
    """``conninfo`` whose sessions start every transaction ``READ ONLY``."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = str(conninfo_to_dict(conninfo).get("options") or "")
    return make_conninfo(conninfo, options=f"{options} {READ_ONLY_OPTION}".strip())


def split_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def validate_postgres(
    datastore: PostgresDatastore,
    *,
    conninfo: str,
    run_dir: Path,
    log: Callable[[str], None] = print,
    progress: ProgressSink | None = None,
    one_pass: bool = True,
) -> ValidationReport:
    """Validate every suite of ``datastore``; ``one_pass=False`` sends everything to GX."""
    started = time.monotonic()
    docs_dir = Path(run_dir) / "data_docs" / safe_name(datastore.name)
    ro_conninfo = read_only_conninfo(conninfo)
    password = _password(ro_conninfo)
    secrets: tuple[str | None, ...] = (password, conninfo, ro_conninfo)
    with quiet():
        return _validate(
            datastore, ro_conninfo, secrets, docs_dir, started, log, progress, one_pass
        )


def _password(conninfo: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    value = conninfo_to_dict(conninfo).get("password")
    return str(value) if value else None


class _GX:
    """GX's context and SQL datasource, created on first use (importing GX costs seconds)."""

    def __init__(self, datastore: PostgresDatastore, conninfo: str, docs_dir: Path) -> None:
        self.datastore = datastore
        self.conninfo = conninfo
        self.docs_dir = docs_dir
        self.context: Any = None
        self.source: Any = None
        self.url = ""
        self.indexes: set[int] = set()  # expectations evaluated by GX

    def start(self) -> tuple[Any, Any]:
        if self.context is None:
            url, _ = sqlalchemy_url(self.conninfo)
            self.url = url
            self.context = ephemeral_context(self.docs_dir)
            self.source = self.context.data_sources.add_sql(
                name=safe_name(f"pg-{self.datastore.name}"), connection_string=url
            )
        return self.context, self.source


def _validate(
    datastore: PostgresDatastore,
    conninfo: str,
    secrets: tuple[str | None, ...],
    docs_dir: Path,
    started: float,
    log: Callable[[str], None],
    sink: ProgressSink | None = None,
    one_pass: bool = True,
) -> ValidationReport:
    outcomes: dict[int, ExpectationOutcome] = {}
    planned_all: list[PlannedExpectation] = []
    suites: list[list[PlannedExpectation]] = []
    for validation in datastore.validation:
        planned = plan_suite(
            validation.table, validation.expectations, validation.on_failure, start=len(planned_all)
        )
        planned_all.extend(planned)
        suites.append(planned)
    gx_run = _GX(datastore, conninfo, docs_dir)
    progress = Progress(
        len(planned_all),
        f"{datastore.name}/validation",
        log,
        unit="expectations",
        sink=sink,
    )
    progress.advance(0)  # publishes the total before the first (possibly long) suite
    conn: Any = None
    try:
        for number, (validation, planned) in enumerate(
            zip(datastore.validation, suites, strict=True)
        ):
            schema, table = split_table(validation.table)
            fast = [p for p in planned if one_pass and onepass.supported(p)]
            if fast:
                try:
                    if conn is None:
                        import psycopg

                        conn = psycopg.connect(conninfo, autocommit=True)
                    done, _ = onepass.evaluate_table(conn, schema, table, fast)
                except Exception as exc:  # missing table, no connection...
                    message = scrub(f"{type(exc).__name__}: {_first_line(exc)}", secrets)
                    done = {p.index: error_outcome(p, message) for p in fast}
                outcomes.update(done)
            # the rest, and what the one-pass query could not evaluate (SQL error)
            slow = [p for p in planned if p.index not in outcomes]
            if slow:
                _run_gx(gx_run, number, validation.table, slow, outcomes, secrets)
            # progress per suite as GX runs them: the plain one, then the redacted one
            for sensitive in (False, True):
                group = [p for p in planned if p.sensitive == sensitive]
                if group:
                    progress.advance(len(group))
        for item in planned_all:
            outcomes.setdefault(
                item.index, error_outcome(item, "no result from great_expectations")
            )
        progress.finish()
        if gx_run.context is not None:
            data_docs = _build_docs(gx_run.context, docs_dir, log)
        else:
            data_docs = None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if gx_run.source is not None:
            _dispose(gx_run.source)
    ordered = tuple(outcomes[p.index] for p in planned_all)
    one_pass_page = write_results_page(
        docs_dir,
        datastore.name,
        [o for p, o in zip(planned_all, ordered, strict=True) if p.index not in gx_run.indexes],
        index=data_docs is None,
    )
    data_docs = data_docs or one_pass_page
    for outcome in ordered:
        log(f"validation {datastore.name}: {describe(outcome)}")
    return ValidationReport(
        datastore=datastore.name,
        outcomes=ordered,
        data_docs=data_docs,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _run_gx(
    gx_run: _GX,
    number: int,
    table_name: str,
    planned: list[PlannedExpectation],
    outcomes: dict[int, ExpectationOutcome],
    secrets: tuple[str | None, ...],
) -> None:
    """Evaluate ``planned`` (one table) with GX: a plain and a redacted suite."""
    gx_run.indexes.update(p.index for p in planned)
    try:
        context, source = gx_run.start()
    except Exception as exc:  # GX missing or broken
        message = scrub(f"{type(exc).__name__}: {_first_line(exc)}", secrets)
        for item in planned:
            outcomes[item.index] = error_outcome(item, message)
        return
    import great_expectations as gx

    all_secrets = (*secrets, gx_run.url)
    schema, table = split_table(table_name)
    try:
        asset = source.add_table_asset(
            name=safe_name(f"{number}-{table_name}"), table_name=table, schema_name=schema
        )
        batch_definition = asset.add_batch_definition_whole_table("whole-table")
    except Exception as exc:  # missing table, no connection...
        message = scrub(f"{type(exc).__name__}: {_first_line(exc)}", all_secrets)
        for item in planned:
            outcomes[item.index] = error_outcome(item, message)
        return
    for sensitive in (False, True):
        group = [p for p in planned if p.sensitive == sensitive]
        if not group:
            continue
        suffix = "-redacted" if sensitive else ""
        suite = context.suites.add(
            gx.ExpectationSuite(name=safe_name(f"{table_name}{suffix}-{number}"))
        )
        for item in group:
            try:
                suite.add_expectation(gx_expectation(item))
            except Exception as exc:  # bad kwargs that slipped past the loader
                outcomes[item.index] = error_outcome(item, scrub(str(exc), all_secrets))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
        )
        fmt = REDACTED_FORMAT if sensitive else SUMMARY_FORMAT
        try:
            result = definition.run(result_format=fmt)
        except Exception as exc:  # missing table, lost connection...
            message = scrub(f"{type(exc).__name__}: {_first_line(exc)}", all_secrets)
            for item in group:
                outcomes.setdefault(item.index, error_outcome(item, message))
            continue
        by_index = {p.index: p for p in group}
        for gx_result in result.results:
            index = result_index(gx_result)
            if index in by_index:
                outcomes[index] = outcome_from_gx(by_index[index], gx_result, all_secrets)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _build_docs(context: Any, docs_dir: Path, log: Callable[[str], None]) -> str | None:
    try:
        context.build_data_docs(site_names=[SITE_NAME])
    except Exception as exc:  # Data Docs are a convenience; results are kept anyway
        log(f"validation: Data Docs not built: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    index = docs_dir / "index.html"
    return str(index) if index.exists() else None


def _dispose(source: Any) -> None:
    with contextlib.suppress(Exception):  # best effort cleanup
        source.get_engine().dispose()
