"""The thin layer over great_expectations: quiet ephemeral context, suites, result mapping.

Only this module and the datastore runners import GX, lazily, at run time.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convoy.validation.models import ExpectationOutcome, OnFailure
from convoy.validation.redact import MAX_EXAMPLES, examples, scrub, touches_sensitive

SITE_NAME = "convoy"
#: Results GX is asked for: counts and up to five unexpected values (never rows).
SUMMARY_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "include_unexpected_rows": False,
}
#: For expectations on sensitive columns: counts only, so no value reaches Data Docs.
REDACTED_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
}


@dataclass(frozen=True)
class PlannedExpectation:
    """One expectation of a policy suite, with its position for matching results."""

    index: int
    suite: str
    expectation_type: str
    kwargs: Mapping[str, Any]
    on_failure: OnFailure
    sensitive: bool


def plan_suite(
    suite: str,
    expectations: Sequence[Mapping[str, Mapping[str, Any]]],
    on_failure: OnFailure,
    start: int = 0,
) -> list[PlannedExpectation]:
    out = []
    for offset, entry in enumerate(expectations):
        ((etype, kwargs),) = entry.items()
        kwargs = dict(kwargs or {})
        out.append(
            PlannedExpectation(
                index=start + offset,
                suite=suite,
                expectation_type=etype,
                kwargs=kwargs,
                on_failure=on_failure,
                sensitive=touches_sensitive(kwargs),
            )
        )
    return out


def ephemeral_context(data_docs_dir: Path | None = None) -> Any:
    """A GX ephemeral context: no analytics, no progress bars, only convoy's Data Docs site."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if data_docs_dir is not None:
        sites[SITE_NAME] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(data_docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence GX's advice warnings (generic SQL datasource, schema_name...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gx_expectation(planned: PlannedExpectation) -> Any:
    """The GX Expectation object of a planned expectation (pydantic-validated by GX)."""
    from great_expectations.expectations.registry import get_expectation_impl

    cls = get_expectation_impl(planned.expectation_type)
    meta = dict(planned.kwargs.get("meta") or {})
    meta["convoy_index"] = planned.index
    return cls(**{**planned.kwargs, "meta": meta})


def result_index(result: Any) -> int | None:
    meta = getattr(result.expectation_config, "meta", None) or {}
    value = meta.get("convoy_index")
    return int(value) if value is not None else None


def error_of(result: Any, secrets: Sequence[str | None] = ()) -> str | None:
    info = getattr(result, "exception_info", None) or {}
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return scrub(str(info.get("exception_message") or "error"), secrets)
    # Several metric errors are reported keyed by metric id.
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return scrub(str(value.get("exception_message") or "error"), secrets)
    return None


def outcome_from_gx(
    planned: PlannedExpectation, result: Any, secrets: Sequence[str | None] = ()
) -> ExpectationOutcome:
    """Map a GX ExpectationValidationResult to an outcome, redacting as needed."""
    data: Mapping[str, Any] = result.result or {}
    error = error_of(result, secrets)
    unexpected = data.get("unexpected_count")
    observed = data.get("observed_value")
    sample = () if planned.sensitive else examples(data.get("partial_unexpected_list") or ())
    return ExpectationOutcome(
        suite=planned.suite,
        expectation_type=planned.expectation_type,
        kwargs=planned.kwargs,
        success=bool(result.success) and error is None,
        observed_value="<redacted>" if planned.sensitive and observed is not None else observed,
        unexpected_count=None if unexpected is None else int(unexpected),
        unexpected_examples=sample,
        on_failure=planned.on_failure,
        element_count=_int_or_none(data.get("element_count")),
        redacted=planned.sensitive,
        error=error,
    )


def error_outcome(planned: PlannedExpectation, message: str) -> ExpectationOutcome:
    return ExpectationOutcome(
        suite=planned.suite,
        expectation_type=planned.expectation_type,
        kwargs=planned.kwargs,
        success=False,
        on_failure=planned.on_failure,
        redacted=planned.sensitive,
        error=message,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def describe(outcome: ExpectationOutcome) -> str:
    """One log line per outcome: ``public.orders expect_... (status): ok``."""
    cols = outcome.kwargs.get("column") or outcome.kwargs.get("column_list") or ""
    where = f" ({cols})" if cols else ""
    if outcome.success:
        state = "ok"
    elif outcome.error:
        state = f"ERROR {outcome.error}"
    else:
        state = "FAILED"
        if outcome.unexpected_count is not None:
            state += f" ({outcome.unexpected_count} unexpected)"
        if outcome.on_failure == "report-only":
            state += " [report-only]"
    return f"{outcome.suite} {outcome.expectation_type}{where}: {state}"


def safe_name(text: str) -> str:
    """A GX object name from a table/collection name."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)[:100] or "suite"
