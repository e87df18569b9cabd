"""Combine per-batch results of a row-wise expectation into one (no GX import).

MongoDB collections are validated batch by batch. For a *map* expectation
(each row passes or fails on its own: not null, in set, regex, between...) the
counts add up exactly, so the combined result equals what GX would report for
the whole collection at once:

- ``element_count``, ``missing_count`` and ``unexpected_count`` are summed;
- the rows considered are all rows, or the non-missing rows when GX reported a
  ``missing_count`` (expectations that ignore nulls);
- success is ``(considered - unexpected) / considered >= mostly`` (``mostly``
  defaults to 1, so any unexpected row fails); no row considered is a success,
  as in GX;
- examples are merged in batch order, distinct, at most five;
- an exception in any batch makes the result a failure carrying the message.

Aggregates (mean, median, uniqueness across rows...) cannot be combined this
way; see :mod:`convoy.validation.mongo` for how those are handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from convoy.validation.redact import MAX_EXAMPLES, examples


@dataclass(frozen=True)
class BatchResult:
    """What one batch reported for one expectation (GX ``result`` dict, flattened)."""

    success: bool
    element_count: int = 0
    unexpected_count: int = 0
    missing_count: int | None = None
    examples: tuple[Any, ...] = ()
    error: str | None = None

    @classmethod
    def from_gx(
        cls, success: bool, result: Mapping[str, Any], error: str | None = None
    ) -> BatchResult:
        missing = result.get("missing_count")
        return cls(
            success=bool(success),
            element_count=int(result.get("element_count") or 0),
            unexpected_count=int(result.get("unexpected_count") or 0),
            missing_count=None if missing is None else int(missing),
            examples=tuple(result.get("partial_unexpected_list") or ()),
            error=error,
        )


@dataclass(frozen=True)
class CombinedResult:
    success: bool
    element_count: int
    unexpected_count: int
    missing_count: int | None
    unexpected_percent: float | None
    examples: tuple[Any, ...]
    batches: int
    error: str | None = None


def combine_map_results(
    batches: Iterable[BatchResult], *, mostly: float | None = None
) -> CombinedResult:
    """The whole-collection result of a row-wise expectation from its batch results."""
    element = unexpected = 0
    missing: int | None = None
    merged: list[Any] = []
    error: str | None = None
    count = 0
    for batch in batches:
        count += 1
        element += batch.element_count
        unexpected += batch.unexpected_count
        if batch.missing_count is not None:
            missing = (missing or 0) + batch.missing_count
        if len(merged) < MAX_EXAMPLES * 4:
            merged.extend(batch.examples)
        if batch.error and error is None:
            error = batch.error
    considered = element - (missing or 0)
    threshold = 1.0 if mostly is None else float(mostly)
    if considered <= 0:
        success, percent = True, None
    else:
        percent = 100.0 * unexpected / considered
        success = (considered - unexpected) / considered >= threshold
    return CombinedResult(
        success=success and error is None,
        element_count=element,
        unexpected_count=unexpected,
        missing_count=missing,
        unexpected_percent=percent,
        examples=examples(merged),
        batches=count,
        error=error,
    )
