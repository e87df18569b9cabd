"""``convoy.analysis.*`` metrics: measurements, their values and analysis verdicts.

Same rules as :mod:`convoy.observe.metrics` (labels are policy names or fixed
enums; emitting never raises): the specs are built with its helpers and go to
the same sink.
"""

from __future__ import annotations

from convoy.observe.metrics import MetricSpec, _emit, _spec

VERDICTS = ("pass", "fail", "inconclusive")
PHASES = ("successful", "failed", "inconclusive")

ANALYSIS_MEASUREMENTS = _spec(
    "analysis.measurements",
    "counter",
    ("policy", "service", "template", "verdict"),
    "convoy_analysis_measurements_total",
    "Analysis measurements taken, by verdict.",
    verdict=VERDICTS,
)
ANALYSIS_VALUE = _spec(
    "analysis.value",
    "gauge",
    ("policy", "service", "template"),
    "convoy_analysis_value",
    "The latest value an analysis query returned.",
)
ANALYSIS_RUNS = _spec(
    "analysis.runs",
    "counter",
    ("policy", "service", "template", "phase"),
    "convoy_analysis_runs_total",
    "Analyses finished, by phase (successful, failed, inconclusive).",
    phase=PHASES,
)

ANALYSIS_METRICS: tuple[MetricSpec, ...] = (ANALYSIS_MEASUREMENTS, ANALYSIS_VALUE, ANALYSIS_RUNS)


def measurement(policy: str, service: str, template: str, verdict: str) -> None:
    _emit(ANALYSIS_MEASUREMENTS, (policy, service, template, verdict), 1)


def value(policy: str, service: str, template: str, number: float) -> None:
    _emit(ANALYSIS_VALUE, (policy, service, template), number)


def finished(policy: str, service: str, template: str, phase: str) -> None:
    _emit(ANALYSIS_RUNS, (policy, service, template, phase), 1)
