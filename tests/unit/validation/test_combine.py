"""Combining per-batch results of row-wise expectations (MongoDB batches)."""

from __future__ import annotations

import pytest

from convoy.validation.combine import BatchResult, combine_map_results


def _b(
    element: int, unexpected: int, missing: int | None = None, ex: tuple[object, ...] = ()
) -> BatchResult:
    return BatchResult(
        success=unexpected == 0,
        element_count=element,
        unexpected_count=unexpected,
        missing_count=missing,
        examples=ex,
    )


@pytest.mark.parametrize(
    ("batches", "mostly", "success", "unexpected", "percent"),
    [
        pytest.param([_b(100, 0), _b(100, 0)], None, True, 0, 0.0, id="all-clean"),
        pytest.param([_b(100, 0), _b(100, 1)], None, False, 1, 0.5, id="one-bad-row-fails"),
        # each batch alone fails mostly=0.9 (8/10 ok) but the collection passes (98/100)
        pytest.param([_b(10, 2), _b(90, 0)], 0.9, True, 2, 2.0, id="mostly-over-collection"),
        # each batch alone passes mostly=0.9 but the collection is exactly at the limit
        pytest.param([_b(50, 5), _b(50, 5)], 0.9, True, 10, 10.0, id="mostly-at-limit"),
        pytest.param([_b(50, 5), _b(50, 6)], 0.9, False, 11, 11.0, id="mostly-just-below"),
        # nulls are not considered when GX reports missing_count
        pytest.param(
            [_b(10, 1, missing=5), _b(10, 0, missing=5)], 0.9, True, 1, 10.0, id="missing"
        ),
        pytest.param([], None, True, 0, None, id="no-batches"),
        pytest.param([_b(10, 0, missing=10)], None, True, 0, None, id="all-missing"),
    ],
)
def test_combination(
    batches: list[BatchResult],
    mostly: float | None,
    success: bool,
    unexpected: int,
    percent: float | None,
) -> None:
    result = combine_map_results(batches, mostly=mostly)
    assert result.success is success
    assert result.unexpected_count == unexpected
    assert result.unexpected_percent == percent
    assert result.element_count == sum(b.element_count for b in batches)
    assert result.batches == len(batches)


def test_examples_are_merged_distinct_and_capped() -> None:
    result = combine_map_results(
        [_b(10, 3, ex=("a", "b", "a")), _b(10, 4, ex=("c", "d", "e", "f")), _b(10, 1, ex=("g",))]
    )
    assert result.examples == ("a", "b", "c", "d", "e")


def test_long_example_values_are_truncated() -> None:
    result = combine_map_results([_b(1, 1, ex=("x" * 500,))])
    (value,) = result.examples
    assert isinstance(value, str)
    assert len(value) <= 64


def test_an_error_in_any_batch_fails_the_result() -> None:
    ok = _b(10, 0)
    broken = BatchResult(success=False, error="column 'x' does not exist")
    result = combine_map_results([ok, broken, ok])
    assert not result.success
    assert result.error == "column 'x' does not exist"


def test_from_gx_result_dict() -> None:
    batch = BatchResult.from_gx(
        False,
        {
            "element_count": 7,
            "unexpected_count": 2,
            "missing_count": 1,
            "partial_unexpected_list": [3, 4],
        },
    )
    assert batch == BatchResult(False, 7, 2, 1, (3, 4))
