"""MongoDB validation: documents streamed in bounded batches, GX (pandas) per batch, combined.

- Row-wise (*map*) expectations run with GX's pandas datasource on each batch
  of ``batch_size`` documents, projected to the columns the suite reads; the
  per-batch results are combined exactly (:mod:`convoy.validation.combine`).
  Memory is bounded by one batch.
- Whole-collection aggregates that batches cannot give (row count, min, max,
  mean, sum, uniqueness) are computed by the server with ``count_documents``
  and ``$group`` aggregations and checked against the same bounds GX uses.
- Anything else (median, quantiles, increasing...) is refused when the policy
  is loaded (:func:`convoy.policy.expectations.check_expectation`) and, if it
  reaches this module anyway, reported as an error outcome.

Dotted column names (``address.city``) read nested fields.

A ``progress`` sink (:mod:`convoy.observe.progress`) receives documents
validated out of the documents the batched suites will read (the collections'
``estimated_document_count``, one scan per suite), at the usual bounded
frequency and once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convoy.observe.progress import Progress, ProgressSink
from convoy.policy.expectations import mongo_support
from convoy.validation.combine import BatchResult, combine_map_results
from convoy.validation.gx_runtime import (
    REDACTED_FORMAT,
    SITE_NAME,
    SUMMARY_FORMAT,
    PlannedExpectation,
    describe,
    ephemeral_context,
    error_of,
    error_outcome,
    gx_expectation,
    plan_suite,
    quiet,
    result_index,
    safe_name,
)
from convoy.validation.models import ExpectationOutcome, ValidationReport
from convoy.validation.redact import MAX_EXAMPLES, columns_of, examples, scrub

if TYPE_CHECKING:
    from convoy.policy.models import MongoDatastore

DEFAULT_BATCH_SIZE = 10_000


def validate_mongo(
    datastore: MongoDatastore,
    *,
    client: Any,
    run_dir: Path,
    log: Callable[[str], None] = print,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressSink | None = None,
) -> ValidationReport:
    with quiet():
        return _validate(datastore, client, run_dir, log, batch_size, progress)


def _validate(
    datastore: MongoDatastore,
    client: Any,
    run_dir: Path,
    log: Callable[[str], None],
    batch_size: int,
    sink: ProgressSink | None = None,
) -> ValidationReport:
    started = time.monotonic()
    docs_dir = Path(run_dir) / "data_docs" / safe_name(datastore.name)
    database = client[datastore.database]
    context = ephemeral_context(docs_dir)
    source = context.data_sources.add_pandas(name=safe_name(f"mongo-{datastore.name}"))
    outcomes: dict[int, ExpectationOutcome] = {}
    planned_all: list[PlannedExpectation] = []
    suites: list[list[PlannedExpectation]] = []
    for validation in datastore.validation:
        planned = plan_suite(
            validation.collection,
            validation.expectations,
            validation.on_failure,
            start=len(planned_all),
        )
        planned_all.extend(planned)
        suites.append(planned)
    scanned = [
        database[v.collection]
        for v, planned in zip(datastore.validation, suites, strict=True)
        if any(mongo_support(p.expectation_type) == "batched" for p in planned)
    ]
    progress = Progress(
        _estimated_documents(scanned) if sink is not None else None,
        f"{datastore.name}/validation",
        lambda _line: None,  # the per-batch lines below already say how far it got
        unit="documents",
        sink=sink,
    )
    for number, (validation, planned) in enumerate(zip(datastore.validation, suites, strict=True)):
        collection = database[validation.collection]
        batched: list[PlannedExpectation] = []
        for item in planned:
            support = mongo_support(item.expectation_type)
            if support == "aggregation":
                outcomes[item.index] = _aggregate(collection, item)
            elif support == "batched":
                batched.append(item)
            else:
                outcomes[item.index] = error_outcome(
                    item, f"{item.expectation_type} cannot be evaluated on MongoDB batches"
                )
        if batched:
            outcomes.update(
                _run_batched(
                    context, source, number, collection, batched, batch_size, log, progress
                )
            )
    # The estimate may be off (writes during the scan); what was read is exact.
    progress.set_total(progress.done)
    progress.finish()
    data_docs = _build_docs(context, docs_dir, log)
    ordered = tuple(outcomes.get(p.index) or error_outcome(p, "no result") for p in planned_all)
    for outcome in ordered:
        log(f"validation {datastore.name}: {describe(outcome)}")
    return ValidationReport(
        datastore=datastore.name,
        outcomes=ordered,
        data_docs=data_docs,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _run_batched(
    context: Any,
    source: Any,
    number: int,
    collection: Any,
    planned: Sequence[PlannedExpectation],
    batch_size: int,
    log: Callable[[str], None],
    progress: Progress | None = None,
) -> dict[int, ExpectationOutcome]:
    import great_expectations as gx

    name = collection.name
    asset = source.add_dataframe_asset(name=safe_name(f"{number}-{name}"))
    batch_definition = asset.add_batch_definition_whole_dataframe("batch")
    groups: list[tuple[Any, dict[str, Any], list[PlannedExpectation]]] = []
    failed: dict[int, ExpectationOutcome] = {}
    for sensitive in (False, True):
        group = [p for p in planned if p.sensitive == sensitive]
        if not group:
            continue
        suffix = "-redacted" if sensitive else ""
        suite = context.suites.add(gx.ExpectationSuite(name=safe_name(f"{name}{suffix}-{number}")))
        kept = []
        for item in group:
            try:
                suite.add_expectation(gx_expectation(item))
                kept.append(item)
            except Exception as exc:
                failed[item.index] = error_outcome(item, scrub(str(exc), ()))
        if kept:
            groups.append((suite, REDACTED_FORMAT if sensitive else SUMMARY_FORMAT, kept))

    columns = sorted({c for p in planned for c in columns_of(p.kwargs)})
    per_index: dict[int, list[BatchResult]] = {p.index: [] for g in groups for p in g[2]}
    documents = 0
    for frame in iter_frames(collection, columns, batch_size):
        documents += len(frame)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        for suite, fmt, _group in groups:
            result = batch.validate(suite, result_format=fmt)
            for gx_result in result.results:
                index = result_index(gx_result)
                if index in per_index:
                    per_index[index].append(
                        BatchResult.from_gx(
                            gx_result.success, gx_result.result or {}, error_of(gx_result)
                        )
                    )
        log(f"validation {name}: {documents} documents checked")
        if progress is not None:
            progress.advance(len(frame))
    out = dict(failed)
    for _suite, _fmt, group in groups:
        for item in group:
            combined = combine_map_results(per_index[item.index], mostly=item.kwargs.get("mostly"))
            out[item.index] = ExpectationOutcome(
                suite=item.suite,
                expectation_type=item.expectation_type,
                kwargs=item.kwargs,
                success=combined.success,
                observed_value=None,
                unexpected_count=combined.unexpected_count,
                unexpected_examples=() if item.sensitive else combined.examples,
                on_failure=item.on_failure,
                element_count=combined.element_count,
                redacted=item.sensitive,
                error=combined.error,
            )
    return out


def _estimated_documents(collections: Sequence[Any]) -> int | None:
    """Documents the scans will read (``None``: unknown, then no percentage or ETA)."""
    total = 0
    for collection in collections:
        try:
            total += int(collection.estimated_document_count())
        except Exception as exc:
            if _connection_failure(exc):
                # Counting would wait for the server once more; the scan reports it.
                return None
            # Views have no collection metadata to estimate from: count them.
            try:
                total += int(collection.count_documents({}))
            except Exception:
                return None
    return total


def _connection_failure(exc: BaseException) -> bool:
    """pymongo's ``ConnectionFailure`` family, by name (mongomock clients have no pymongo)."""
    return any(cls.__name__ == "ConnectionFailure" for cls in type(exc).__mro__)


def iter_frames(collection: Any, columns: Sequence[str], batch_size: int) -> Iterator[Any]:
    """DataFrames of at most ``batch_size`` documents, with exactly ``columns``."""
    import pandas as pd  # type: ignore[import-untyped]

    projection: dict[str, int] = dict.fromkeys(columns, 1)
    if "_id" not in columns:
        projection["_id"] = 0
    cursor = collection.find({}, projection or None, batch_size=batch_size)
    rows: list[list[Any]] = []
    try:
        for document in cursor:
            rows.append([_plain(_get_path(document, c)) for c in columns])
            if len(rows) >= batch_size:
                yield pd.DataFrame(rows, columns=list(columns), dtype=object)
                rows = []
        if rows:
            yield pd.DataFrame(rows, columns=list(columns), dtype=object)
    finally:
        close = getattr(cursor, "close", None)
        if callable(close):
            close()


def _get_path(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _plain(value: Any) -> Any:
    """bson types pandas/GX do not know (ObjectId, Decimal128) as plain values."""
    kind = type(value).__name__
    if kind == "ObjectId":
        return str(value)
    if kind == "Decimal128":
        return value.to_decimal()
    return value


# -- server-side aggregates ---------------------------------------------------------------


def _aggregate(collection: Any, item: PlannedExpectation) -> ExpectationOutcome:
    try:
        if item.expectation_type == "expect_column_values_to_be_unique":
            return _unique(collection, item)
        observed = _aggregate_value(collection, item)
    except Exception as exc:
        return error_outcome(item, scrub(f"{type(exc).__name__}: {exc}", ()))
    kwargs = item.kwargs
    if item.expectation_type == "expect_table_row_count_to_equal":
        success = observed == kwargs.get("value")
    else:
        success = within(
            observed,
            kwargs.get("min_value"),
            kwargs.get("max_value"),
            strict_min=bool(kwargs.get("strict_min", False)),
            strict_max=bool(kwargs.get("strict_max", False)),
        )
    return ExpectationOutcome(
        suite=item.suite,
        expectation_type=item.expectation_type,
        kwargs=kwargs,
        success=success,
        observed_value="<redacted>" if item.sensitive and observed is not None else observed,
        on_failure=item.on_failure,
        redacted=item.sensitive,
    )


_GROUP_OPERATORS = {
    "expect_column_min_to_be_between": "$min",
    "expect_column_max_to_be_between": "$max",
    "expect_column_mean_to_be_between": "$avg",
    "expect_column_sum_to_be_between": "$sum",
}


def _aggregate_value(collection: Any, item: PlannedExpectation) -> Any:
    if item.expectation_type.startswith("expect_table_row_count"):
        return collection.count_documents({})
    operator = _GROUP_OPERATORS[item.expectation_type]
    column = str(item.kwargs["column"])
    pipeline = [{"$group": {"_id": None, "value": {operator: f"${column}"}}}]
    rows = list(collection.aggregate(pipeline, allowDiskUse=True))
    return _plain(rows[0]["value"]) if rows else None


def within(
    value: Any,
    min_value: Any,
    max_value: Any,
    *,
    strict_min: bool = False,
    strict_max: bool = False,
) -> bool:
    """GX's bound check: None bounds are open; a missing observed value fails."""
    if value is None:
        return False
    try:
        if min_value is not None and (value <= min_value if strict_min else value < min_value):
            return False
        return not (
            max_value is not None and (value >= max_value if strict_max else value > max_value)
        )
    except TypeError:
        return False


def _unique(collection: Any, item: PlannedExpectation) -> ExpectationOutcome:
    column = str(item.kwargs["column"])
    total = collection.count_documents({})
    missing = collection.count_documents({column: None})
    pipeline = [
        {"$match": {column: {"$ne": None}}},
        {"$group": {"_id": f"${column}", "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
    ]
    unexpected = 0
    sample: list[Any] = []
    for row in collection.aggregate(pipeline, allowDiskUse=True):
        unexpected += int(row["n"])
        if len(sample) < MAX_EXAMPLES:
            sample.append(_plain(row["_id"]))
    considered = total - missing
    mostly = item.kwargs.get("mostly")
    threshold = 1.0 if mostly is None else float(mostly)
    success = considered == 0 or (considered - unexpected) / considered >= threshold
    return ExpectationOutcome(
        suite=item.suite,
        expectation_type=item.expectation_type,
        kwargs=item.kwargs,
        success=success,
        unexpected_count=unexpected,
        unexpected_examples=() if item.sensitive else examples(sample),
        on_failure=item.on_failure,
        element_count=total,
        redacted=item.sensitive,
    )


def _build_docs(context: Any, docs_dir: Path, log: Callable[[str], None]) -> str | None:
    """Data Docs of the suites (per-batch results are combined by convoy, not stored in GX)."""
    try:
        context.build_data_docs(site_names=[SITE_NAME])
    except Exception as exc:
        log(f"validation: Data Docs not built: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    index = docs_dir / "index.html"
    return str(index) if index.exists() else None
