"""Run analysis templates: measure a query ``count`` times, judge each value, decide.

Semantics (Argo Rollouts' AnalysisRun, Flagger's thresholdRange):

- each measurement is ``pass`` when ``min <= value <= max``, ``fail`` when
  not, ``inconclusive`` when the query gave no number (``onNoData`` decides:
  ``inconclusive`` by default, or ``fail``/``pass``) or the provider could not
  answer;
- the analysis is ``failed`` as soon as more than ``failureLimit``
  measurements failed (it stops there), ``inconclusive`` when more than
  ``inconclusiveLimit`` were inconclusive, else ``successful``;
- a dry run takes one measurement and never raises.

Specs are plain JSON-able data (:meth:`AnalysisSpec.to_dict`) so that the
Airflow task and the rollout pod run the same thing the plan froze.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from convoy.policy.analysis import AnalysisTemplate, render_query, seconds
from convoy.rollout.errors import RolloutError
from convoy.rollout.providers import Provider, ProviderError

Verdict = Literal["pass", "fail", "inconclusive"]
Phase = Literal["successful", "failed", "inconclusive"]
LogFn = Callable[[str], None]
#: Receives the analysis record (:meth:`AnalysisRun.to_dict`) after every measurement.
AnalysisSink = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class AnalysisSpec:
    """A template as the runner needs it (no policy objects, JSON round trip)."""

    name: str
    provider: str  # prometheus | http
    conn_id: str
    query: str  # PromQL (prometheus) or the path to GET (http); with {{ variables }}
    min: float | None
    max: float | None
    interval_s: float = 10.0
    count: int = 3
    initial_delay_s: float = 0.0
    failure_limit: int = 0
    inconclusive_limit: int = 0
    on_no_data: Verdict = "inconclusive"
    #: Kubernetes Secret a rollout pod reads the provider from ("" = the Airflow connection only).
    secret: str = ""

    @classmethod
    def from_template(cls, tpl: AnalysisTemplate) -> AnalysisSpec:
        if tpl.provider.http is not None:
            provider, conn_id, query = "http", tpl.provider.http.conn_id, tpl.provider.http.path
            ref = tpl.provider.http.secret_ref
            low: float | None = 1.0
            high: float | None = 1.0
        else:
            assert tpl.provider.prometheus is not None
            provider, conn_id, query = (
                "prometheus",
                tpl.provider.prometheus.conn_id,
                tpl.query or "",
            )
            ref = tpl.provider.prometheus.secret_ref
            bounds = tpl.threshold_range
            low = None if bounds is None or bounds.min is None else float(bounds.min)
            high = None if bounds is None or bounds.max is None else float(bounds.max)
        verdicts: dict[str, Verdict] = {"pass": "pass", "fail": "fail"}
        return cls(
            name=tpl.name,
            provider=provider,
            conn_id=conn_id,
            query=query,
            min=low,
            max=high,
            interval_s=seconds(tpl.interval),
            count=tpl.count,
            initial_delay_s=seconds(tpl.initial_delay),
            failure_limit=tpl.failure_limit,
            inconclusive_limit=tpl.inconclusive_limit,
            on_no_data=verdicts.get(tpl.on_no_data, "inconclusive"),
            secret=ref.name if ref is not None else "",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def range_text(self) -> str:
        if self.provider == "http":
            return "2xx"
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "+inf" if self.max is None else f"{self.max:g}"
        return f"[{low}, {high}]"

    def judge(self, value: float | None) -> Verdict:
        if value is None:
            return self.on_no_data
        if self.min is not None and value < self.min:
            return "fail"
        if self.max is not None and value > self.max:
            return "fail"
        return "pass"


@dataclass(frozen=True)
class Measurement:
    at: str  # ISO 8601 UTC
    value: float | None
    verdict: Verdict
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "value": self.value, "verdict": self.verdict,
                "message": self.message}  # fmt: skip


@dataclass
class AnalysisRun:
    """One analysis of one service (or wave): its measurements and its phase."""

    template: str
    provider: str
    query: str  # rendered
    range: str
    where: str  # "after rollout", "canary step 2", "wave 1"
    service: str
    phase: Phase | Literal["running"] = "running"
    measurements: list[Measurement] = field(default_factory=list)
    count: int = 0
    dry_run: bool = False
    #: What the approver decided about an inconclusive analysis ("approved by alice", ...).
    decision: str = ""

    def failed_values(self) -> list[float | None]:
        return [m.value for m in self.measurements if m.verdict == "fail"]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "template": self.template,
            "provider": self.provider,
            "query": self.query,
            "range": self.range,
            "where": self.where,
            "service": self.service,
            "phase": self.phase,
            "count": self.count,
            "dryRun": self.dry_run,
            "measurements": [m.to_dict() for m in self.measurements],
        }
        if self.decision:
            data["decision"] = self.decision
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisRun:
        """The run as :meth:`to_dict` wrote it (a resumed task goes on with it)."""
        return cls(
            template=str(data["template"]),
            provider=str(data["provider"]),
            query=str(data["query"]),
            range=str(data["range"]),
            where=str(data["where"]),
            service=str(data["service"]),
            phase=data.get("phase", "running"),
            measurements=[
                Measurement(str(m["at"]), m.get("value"), m["verdict"], str(m.get("message") or ""))
                for m in data.get("measurements") or ()
            ],
            count=int(data.get("count") or 0),
            dry_run=bool(data.get("dryRun")),
            decision=str(data.get("decision") or ""),
        )

    def summary(self) -> str:
        values = ", ".join(_fmt(m.value) + f" ({m.verdict})" for m in self.measurements)
        return f"{self.template} {self.where}: {self.phase}; range {self.range}; values {values}"


def _fmt(value: float | None) -> str:
    return "no data" if value is None else f"{value:.6g}"


class AnalysisFailed(RolloutError):
    """An analysis found values outside its threshold range (more than failureLimit)."""

    retriable: ClassVar[bool] = False

    def __init__(self, run: AnalysisRun, runs: Sequence[AnalysisRun] = ()) -> None:
        failed = ", ".join(_fmt(v) for v in run.failed_values())
        super().__init__(
            f"analysis {run.template} of {run.service} ({run.where}) failed: values {failed} "
            f"outside {run.range}; query: {run.query}",
            service=run.service,
            template=run.template,
            query=run.query,
            failedValues=run.failed_values(),
            analysis=[r.to_dict() for r in (runs or (run,))],
        )


class AnalysisInconclusive(RolloutError):
    """An analysis had more inconclusive measurements (no data) than inconclusiveLimit."""

    retriable: ClassVar[bool] = False

    def __init__(self, run: AnalysisRun, runs: Sequence[AnalysisRun] = ()) -> None:
        notes = "; ".join(sorted({m.message for m in run.measurements if m.message})) or "no data"
        decided = f"; {run.decision}" if run.decision else ""
        super().__init__(
            f"analysis {run.template} of {run.service} ({run.where}) was inconclusive: {notes}"
            f"{decided}; query: {run.query}",
            service=run.service,
            template=run.template,
            query=run.query,
            inconclusive=True,
            analysis=[r.to_dict() for r in (runs or (run,))],
            **({"decision": run.decision} if run.decision else {}),
        )


class Analyzer:
    """Runs :class:`AnalysisSpec` s against providers keyed by ``(provider, conn_id)``."""

    def __init__(
        self,
        providers: Mapping[tuple[str, str], Provider],
        *,
        log: LogFn,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sink: AnalysisSink | None = None,
        on_measurement: Callable[[AnalysisRun, Measurement], None] | None = None,
    ) -> None:
        self.providers = providers
        self.log = log
        self.sleep = sleep
        self.now = now
        self.sink = sink
        self.on_measurement = on_measurement
        self.runs: list[AnalysisRun] = []

    def run(
        self,
        spec: AnalysisSpec,
        values: Mapping[str, str],
        *,
        service: str,
        where: str,
        dry_run: bool = False,
    ) -> AnalysisRun:
        """Measure and decide; the caller raises (:func:`require`) or records."""
        query = render_query(spec.query, dict(values), promql=spec.provider == "prometheus")
        count = 1 if dry_run else spec.count
        run = AnalysisRun(
            spec.name, spec.provider, query, spec.range_text(), where, service,
            count=count, dry_run=dry_run,
        )  # fmt: skip
        self.runs.append(run)
        provider = self.providers.get((spec.provider, spec.conn_id))
        self.log(
            f"{service}: analysis {spec.name} ({where}): {count} measurement(s) every "
            f"{spec.interval_s:g}s, pass in {run.range}"
        )
        if spec.initial_delay_s and not dry_run:
            self.sleep(spec.initial_delay_s)
        failures = inconclusive = 0
        for index in range(count):
            if index:
                self.sleep(spec.interval_s)
            measurement = self._measure(spec, provider, query)
            run.measurements.append(measurement)
            failures += measurement.verdict == "fail"
            inconclusive += measurement.verdict == "inconclusive"
            self.log(
                f"{service}: analysis {spec.name} {index + 1}/{count}: "
                f"{_fmt(measurement.value)} -> {measurement.verdict}"
                + (f" ({measurement.message})" if measurement.message else "")
            )
            if self.on_measurement is not None:
                self.on_measurement(run, measurement)
            if failures > spec.failure_limit:
                break
            self._push(run)
        if failures > spec.failure_limit:
            run.phase = "failed"
        elif inconclusive > spec.inconclusive_limit:
            run.phase = "inconclusive"
        else:
            run.phase = "successful"
        self.log(f"{service}: analysis {spec.name} ({where}): {run.phase}")
        self._push(run)
        return run

    def _measure(self, spec: AnalysisSpec, provider: Provider | None, query: str) -> Measurement:
        at = self.now().isoformat(timespec="seconds")
        if provider is None:
            return Measurement(
                at, None, "inconclusive", f"no {spec.provider} provider {spec.conn_id}"
            )
        try:
            value = provider.measure(query)
        except ProviderError as exc:
            return Measurement(at, None, "inconclusive", str(exc))
        return Measurement(at, value, spec.judge(value), "" if value is not None else "no data")

    def _push(self, run: AnalysisRun) -> None:
        if self.sink is None:
            return
        try:
            self.sink(run.to_dict())
        except Exception as exc:  # a sink never fails the analysis
            self.log(f"analysis progress not published: {type(exc).__name__}")


def require(run: AnalysisRun, runs: Sequence[AnalysisRun] = ()) -> None:
    """Raise :class:`AnalysisFailed` / :class:`AnalysisInconclusive` unless it succeeded.

    Dry runs never raise: they show today's value and verdict.
    """
    if run.dry_run:
        return
    if run.phase == "failed":
        raise AnalysisFailed(run, runs)
    if run.phase == "inconclusive":
        raise AnalysisInconclusive(run, runs)
