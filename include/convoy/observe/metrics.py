"""Every metric convoy emits: names, types, labels, and one small function each.

Metrics go to a :class:`Sink` that the Airflow layer installs
(:mod:`convoy.airflow.stats`, on import of ``convoy.airflow``): Airflow's ``Stats``,
so the deployment's ``[metrics]`` settings (StatsD, DogStatsD, OpenTelemetry)
apply unchanged. Without a sink (a plain script, the rollout pod), samples are
dropped. StatsD has no tags, so each label value is a dot-separated
part of the name, after a fixed stem::

    <statsd_prefix>.convoy.rollout.services_rolled_out.<policy>.<service>

``deploy/statsd-mapping.yaml`` turns those names back into Prometheus metrics
with labels (``convoy_services_rolled_out_total{policy, service}``); the same
label values are also passed as ``tags`` for the backends that support them.

Label values are only names from the policy (policy, service, datastore,
transform) or values of a small fixed set (outcome, phase, result, step):
never run ids, dates or free text, so the number of series stays bounded.

Rules: this module never imports Airflow (the sink is the adapter), and
emitting never raises into the caller: a broken metrics backend must not fail
an upgrade.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from convoy.redaction import get_logger

log = get_logger(__name__)

MetricType = Literal["counter", "gauge", "timer"]

#: Name stem shared by every convoy metric (after the deployment's statsd prefix).
ROOT = "convoy"

RUN_OUTCOMES = ("success", "failed", "rolled_back", "dry_run")
ROLLBACK_PHASES = ("started", "succeeded", "failed")
VALIDATION_RESULTS = ("passed", "failed")
STEP_KINDS = ("preflight", "rollout", "backup", "migrate", "transform", "validate", "rollback")

RunOutcome = Literal["success", "failed", "rolled_back", "dry_run"]
RollbackPhase = Literal["started", "succeeded", "failed"]
StepKind = Literal["preflight", "rollout", "backup", "migrate", "transform", "validate", "rollback"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its StatsD stem, type, labels (in name order) and Prometheus name."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    prometheus: str
    help: str
    #: Allowed values per label for the labels that are not policy names.
    enums: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def stat_stem(self) -> str:
        return f"{ROOT}.{self.name}"

    def stat(self, *values: str) -> str:
        """The StatsD name (without the deployment prefix) for these label values."""
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {values!r}")
        return ".".join([self.stat_stem, *(label_value(v) for v in values)])


def _spec(
    name: str,
    type_: MetricType,
    labels: Sequence[str],
    prometheus: str,
    help_: str,
    **enums: tuple[str, ...],
) -> MetricSpec:
    return MetricSpec(name, type_, tuple(labels), prometheus, help_, tuple(enums.items()))


SERVICES_ROLLED_OUT = _spec(
    "rollout.services_rolled_out",
    "counter",
    ("policy", "service"),
    "convoy_services_rolled_out_total",
    "Services whose new version is rolled out and ready.",
)
ROLLOUT_DURATION = _spec(
    "rollout.duration",
    "timer",
    ("policy", "service"),
    "convoy_rollout_duration_seconds",
    "Time from patching a workload to the new version being ready.",
)
READINESS_WAIT = _spec(
    "rollout.readiness_wait",
    "timer",
    ("policy", "service"),
    "convoy_readiness_wait_seconds",
    "Time spent waiting for readiness after the workload was patched.",
)
SERVICES_TOTAL = _spec(
    "progress.services_total",
    "gauge",
    ("policy",),
    "convoy_services_total",
    "Services selected for the current run.",
)
SERVICES_DONE = _spec(
    "progress.services_done",
    "gauge",
    ("policy",),
    "convoy_services_done",
    "Services of the current run rolled out so far.",
)
RUN_ETA = _spec(
    "progress.eta_seconds",
    "gauge",
    ("policy",),
    "convoy_run_eta_seconds",
    "Estimated seconds left in the current run (from the latest long step).",
)
ROWS_TRANSFORMED = _spec(
    "datastore.rows_transformed",
    "counter",
    ("policy", "datastore", "transform"),
    "convoy_rows_transformed_total",
    "Rows or documents transformed.",
)
TRANSFORM_RATE = _spec(
    "datastore.transform_rate",
    "gauge",
    ("policy", "datastore", "transform"),
    "convoy_transform_rows_per_second",
    "Current rate of a transform in rows or documents per second.",
)
TRANSFORM_ROWS_EXPECTED = _spec(
    "datastore.transform_rows_expected",
    "gauge",
    ("policy", "datastore", "transform"),
    "convoy_transform_rows_expected",
    "Rows or documents a transform has to process in total.",
)
MIGRATIONS_APPLIED = _spec(
    "datastore.migrations_applied",
    "counter",
    ("policy", "datastore"),
    "convoy_migrations_applied_total",
    "Schema migrations applied.",
)
VALIDATION_EXPECTATIONS = _spec(
    "validation.expectations",
    "counter",
    ("policy", "datastore", "result"),
    "convoy_validation_expectations_total",
    "Validation expectations evaluated, by result.",
    result=VALIDATION_RESULTS,
)
ROLLBACKS = _spec(
    "rollback",
    "counter",
    ("policy", "phase"),
    "convoy_rollbacks_total",
    "Rollbacks by phase: started, succeeded, failed.",
    phase=ROLLBACK_PHASES,
)
STEP_FAILURES = _spec(
    "step.failed",
    "counter",
    ("policy", "step"),
    "convoy_step_failures_total",
    "Failed steps by kind.",
    step=STEP_KINDS,
)
RUN_OUTCOME = _spec(
    "run.outcome",
    "counter",
    ("policy", "outcome"),
    "convoy_runs_total",
    "Finished runs by outcome.",
    outcome=RUN_OUTCOMES,
)
RUN_DURATION = _spec(
    "run.duration",
    "timer",
    ("policy",),
    "convoy_run_duration_seconds",
    "Duration of a run, from its start to its outcome.",
)

_CATALOG: tuple[MetricSpec, ...] = (
    SERVICES_ROLLED_OUT,
    ROLLOUT_DURATION,
    READINESS_WAIT,
    SERVICES_TOTAL,
    SERVICES_DONE,
    RUN_ETA,
    ROWS_TRANSFORMED,
    TRANSFORM_RATE,
    TRANSFORM_ROWS_EXPECTED,
    MIGRATIONS_APPLIED,
    VALIDATION_EXPECTATIONS,
    ROLLBACKS,
    STEP_FAILURES,
    RUN_OUTCOME,
    RUN_DURATION,
)


def metric_catalog() -> list[MetricSpec]:
    """Every metric convoy emits (pure; the tests check the mapping and dashboard)."""
    from convoy.observe.analysis_metrics import ANALYSIS_METRICS

    return [*_CATALOG, *ANALYSIS_METRICS]


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def label_value(value: object) -> str:
    """One name part: dots and other separators become ``_`` (never a new level)."""
    text = _UNSAFE.sub("_", str(value))
    return text or "_"


# --------------------------------------------------------------------------- emission


class Sink(Protocol):
    """Where samples go: the subset of Airflow's ``Stats`` interface convoy uses."""

    def incr(self, stat: str, count: int = 1, *, tags: Mapping[str, str]) -> None: ...

    def gauge(self, stat: str, value: float, *, tags: Mapping[str, str]) -> None: ...

    def timing(self, stat: str, dt: float, *, tags: Mapping[str, str]) -> None: ...


class _Discard:
    """The sink until one is installed: samples are dropped."""

    def incr(self, stat: str, count: int = 1, *, tags: Mapping[str, str]) -> None:
        pass

    def gauge(self, stat: str, value: float, *, tags: Mapping[str, str]) -> None:
        pass

    def timing(self, stat: str, dt: float, *, tags: Mapping[str, str]) -> None:
        pass


_DISCARD = _Discard()
_sink: Sink = _DISCARD


def use_sink(sink: Sink | None) -> Sink | None:
    """Send every later sample to ``sink`` (``None``: drop them); returns the previous one."""
    global _sink
    previous = None if _sink is _DISCARD else _sink
    _sink = _DISCARD if sink is None else sink
    return previous


def current_sink() -> Sink | None:
    """The installed sink, ``None`` when samples are dropped."""
    return None if _sink is _DISCARD else _sink


def _stats() -> Sink:
    return _sink


def _check_enums(spec: MetricSpec, values: Sequence[str]) -> None:
    allowed = dict(spec.enums)
    for label, value in zip(spec.labels, values, strict=True):
        if label in allowed and value not in allowed[label]:
            raise ValueError(f"{spec.name}: {label}={value!r} is not one of {allowed[label]}")


def _emit(spec: MetricSpec, values: Sequence[str], amount: float) -> None:
    """Send one sample; log (never raise) when anything goes wrong."""
    try:
        _check_enums(spec, values)
        stat = spec.stat(*values)
        tags = {label: label_value(v) for label, v in zip(spec.labels, values, strict=True)}
        stats = _stats()
        if spec.type == "counter":
            stats.incr(stat, count=int(amount), tags=tags)
        elif spec.type == "gauge":
            stats.gauge(stat, float(amount), tags=tags)
        else:
            # Airflow's StatsD backend sends timings in milliseconds; the
            # statsd_exporter turns them back into seconds.
            stats.timing(stat, float(amount) * 1000.0, tags=tags)
    except Exception:
        log.warning("could not emit metric %s%s", spec.name, tuple(values), exc_info=True)


# --------------------------------------------------------------------------- rollout


def service_rolled_out(policy: str, service: str) -> None:
    """A service's new version is rolled out and ready."""
    _emit(SERVICES_ROLLED_OUT, (policy, service), 1)


def rollout_duration(policy: str, service: str, seconds: float) -> None:
    """Seconds from patching the workload to its new version being ready."""
    _emit(ROLLOUT_DURATION, (policy, service), seconds)


def readiness_wait(policy: str, service: str, seconds: float) -> None:
    """Seconds spent waiting for readiness after the patch."""
    _emit(READINESS_WAIT, (policy, service), seconds)


def services_total(policy: str, n: int) -> None:
    """Services selected for this run (set once, at preflight)."""
    _emit(SERVICES_TOTAL, (policy,), n)


def services_done(policy: str, n: int) -> None:
    """Services of this run rolled out so far (0 at preflight)."""
    _emit(SERVICES_DONE, (policy,), n)


def run_eta(policy: str, seconds: float) -> None:
    """Estimated seconds left in the run (from the latest progress line)."""
    _emit(RUN_ETA, (policy,), max(0.0, seconds))


# --------------------------------------------------------------------------- datastores


def rows_transformed(policy: str, datastore: str, transform: str, n: int) -> None:
    """``n`` more rows or documents transformed (call per batch)."""
    if n > 0:
        _emit(ROWS_TRANSFORMED, (policy, datastore, transform), n)


def transform_rate(policy: str, datastore: str, transform: str, rows_per_second: float) -> None:
    """Current rate of a transform."""
    _emit(TRANSFORM_RATE, (policy, datastore, transform), rows_per_second)


def transform_rows_expected(policy: str, datastore: str, transform: str, total: int) -> None:
    """Rows or documents the transform has to process in total (for progress and ETA)."""
    _emit(TRANSFORM_ROWS_EXPECTED, (policy, datastore, transform), total)


def migrations_applied(policy: str, datastore: str, n: int) -> None:
    """``n`` schema migrations applied."""
    if n > 0:
        _emit(MIGRATIONS_APPLIED, (policy, datastore), n)


def validation_expectations(policy: str, datastore: str, passed: int, failed: int) -> None:
    """Result counts of one validation step."""
    if passed > 0:
        _emit(VALIDATION_EXPECTATIONS, (policy, datastore, "passed"), passed)
    if failed > 0:
        _emit(VALIDATION_EXPECTATIONS, (policy, datastore, "failed"), failed)


# --------------------------------------------------------------------------- run


def rollback(policy: str, phase: RollbackPhase) -> None:
    """A rollback started, succeeded or failed."""
    _emit(ROLLBACKS, (policy, phase), 1)


def step_failed(policy: str, step: StepKind) -> None:
    """A step of this kind failed (before any retry decides the run's fate)."""
    _emit(STEP_FAILURES, (policy, step), 1)


def run_outcome(policy: str, outcome: RunOutcome) -> None:
    """The run finished with this outcome."""
    _emit(RUN_OUTCOME, (policy, outcome), 1)


def run_duration(policy: str, seconds: float) -> None:
    """Seconds from the run's start to its outcome."""
    _emit(RUN_DURATION, (policy,), seconds)
