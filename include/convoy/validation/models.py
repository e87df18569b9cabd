"""Results of a datastore validation: plain, frozen, JSON-able (no GX import).

These objects travel through XCom and into the run report, so they never carry
whole rows, connection strings or values of sensitive columns (see
:mod:`convoy.validation.redact`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from convoy.validation.redact import jsonable

OnFailure = Literal["rollback", "report-only"]


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation of one suite (a table or a collection).

    ``unexpected_examples`` holds at most five values of the expectation's own
    column(s), each truncated; it is empty (and ``redacted`` is true) when a
    column looks sensitive. ``error`` is set when the expectation could not be
    evaluated (missing column, SQL error...); such an outcome is a failure.
    """

    suite: str
    expectation_type: str
    kwargs: Mapping[str, Any]
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_examples: tuple[Any, ...] = ()
    on_failure: OnFailure = "rollback"
    element_count: int | None = None
    redacted: bool = False
    error: str | None = None

    @property
    def blocking(self) -> bool:
        """A failure that must fail the task and trigger the rollback."""
        return not self.success and self.on_failure == "rollback"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "expectation_type": self.expectation_type,
            "kwargs": jsonable(dict(self.kwargs)),
            "success": self.success,
            "observed_value": jsonable(self.observed_value),
            "unexpected_count": self.unexpected_count,
            "unexpected_examples": [jsonable(v) for v in self.unexpected_examples],
            "on_failure": self.on_failure,
            "element_count": self.element_count,
            "redacted": self.redacted,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectationOutcome:
        on_failure = data.get("on_failure", "rollback")
        if on_failure not in ("rollback", "report-only"):
            raise ValueError(f"on_failure must be rollback or report-only, not {on_failure!r}")
        return cls(
            suite=str(data["suite"]),
            expectation_type=str(data["expectation_type"]),
            kwargs=dict(data.get("kwargs") or {}),
            success=bool(data["success"]),
            observed_value=data.get("observed_value"),
            unexpected_count=data.get("unexpected_count"),
            unexpected_examples=tuple(data.get("unexpected_examples") or ()),
            on_failure=cast(OnFailure, on_failure),
            element_count=data.get("element_count"),
            redacted=bool(data.get("redacted", False)),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class ValidationReport:
    """Every expectation outcome of one datastore, plus the Data Docs index if built.

    ``success`` is true when every expectation passed; ``blocking_failures``
    are the failures whose suite says ``onFailure: rollback`` (the default):
    the validation task fails when there is at least one.
    """

    datastore: str
    outcomes: tuple[ExpectationOutcome, ...] = ()
    data_docs: str | None = None
    duration_seconds: float | None = field(default=None, compare=False)

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def blocking_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.blocking]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        """``orders: 5 expectations, 1 failed (1 blocking)``."""
        failed = len(self.failures)
        blocking = len(self.blocking_failures)
        text = f"{self.datastore}: {len(self.outcomes)} expectations, {failed} failed"
        return f"{text} ({blocking} blocking)" if failed else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "datastore": self.datastore,
            "success": self.success,
            "blocking": len(self.blocking_failures),
            "outcomes": [o.to_dict() for o in self.outcomes],
            "data_docs": self.data_docs,
            "duration_seconds": self.duration_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        return cls(
            datastore=str(data["datastore"]),
            outcomes=tuple(ExpectationOutcome.from_dict(o) for o in data.get("outcomes") or ()),
            data_docs=data.get("data_docs"),
            duration_seconds=data.get("duration_seconds"),
        )
