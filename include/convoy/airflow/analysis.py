"""Verified rollouts in Airflow tasks: what a service's task gets, and the providers.

The builder hands each rollout task a JSON ``verify`` argument
(:func:`verify_kwargs`: canary steps, analyses after the rollout, the templates
they use); the task builds providers from Airflow connections
(:func:`providers`) and runs :class:`convoy.rollout.canary.VerifiedRollout`.
Every analysis is pushed as XCom ``analysis`` while it runs and when it ends,
so the run report, the Upgrades page and the failure alert read the
measurements even when the step failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convoy.observe import analysis_metrics as metrics
from convoy.policy.models import Policy
from convoy.redaction import get_logger

log = get_logger(__name__)

#: XCom key of a rollout task's analyses (list of ``AnalysisRun.to_dict()``).
ANALYSIS_KEY = "analysis"


def verify_kwargs(policy: Policy, service: str) -> dict[str, Any]:
    """The ``verify`` argument of a service's rollout task; ``{}`` when it has none."""
    from convoy.rollout.analysis import AnalysisSpec

    svc = next(s for s in policy.services if s.name == service)
    templates = {t.name: AnalysisSpec.from_template(t) for t in policy.analysis_templates}
    after = svc.analysis if svc.analysis is not None else policy.rollout.analysis
    steps = [s.model_dump(exclude_none=True) for s in svc.canary.steps] if svc.canary else []
    used = {str(s["analysis"]) for s in steps if "analysis" in s} | set(after)
    if not steps and not after:
        return {}
    return {
        "canary": steps,
        "analyses": list(after),
        "templates": {n: templates[n].to_dict() for n in sorted(used) if n in templates},
    }


def rollout_kwargs(policy: Policy, service: str) -> dict[str, Any]:
    """``{"verify": ...}`` for the rollout task's op_kwargs, ``{}`` when there is nothing to verify.

    Leaving the key out keeps the serialized DAG of policies without analyses unchanged.
    """
    verify = verify_kwargs(policy, service)
    return {"verify": verify} if verify else {}


def providers(specs: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """One provider per ``(provider, connId)`` the specs use, from Airflow connections.

    A connection that cannot be read leaves its provider out: its measurements
    are inconclusive with a message naming the connection id (never its URI).
    """
    from convoy.rollout.providers.prometheus import (
        HttpCheckProvider,
        PrometheusProvider,
        auth_header,
        base_url,
    )

    out: dict[tuple[str, str], Any] = {}
    for spec in specs.values():
        key = (str(spec["provider"]), str(spec["conn_id"]))
        if key in out:
            continue
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(key[1])
        except Exception as exc:
            log.warning("connection %s for %s analyses: %s", key[1], key[0], type(exc).__name__)
            continue
        url = base_url(str(conn.host or ""), schema=conn.schema or None, port=conn.port)
        headers = auth_header(conn.login, conn.password)
        cls = PrometheusProvider if key[0] == "prometheus" else HttpCheckProvider
        out[key] = cls(url, headers)
    return out


def verified_apply(
    runner: Any,
    target: Any,
    step: Mapping[str, Any],
    verify: Mapping[str, Any],
    *,
    deadline_seconds: float,
    dry_run: bool,
    context: Mapping[str, Any],
    progress: Any,
) -> Any:
    """Run the step through its canary and analyses; returns a ``VerifiedResult``.

    On a failed or inconclusive analysis the measurements are pushed first,
    then the error propagates (non-retriable: the task fails at once and the
    rollback runs).
    """
    from convoy.rollout.analysis import AnalysisSpec, Analyzer
    from convoy.rollout.canary import VerifiedRollout

    ti = context["ti"]
    service = str(step["service"])
    policy = str(getattr(ti, "dag_id", "") or "")
    templates = {n: AnalysisSpec.from_dict(d) for n, d in verify.get("templates", {}).items()}

    def push(runs: list[dict[str, Any]]) -> None:
        try:
            ti.xcom_push(key=ANALYSIS_KEY, value=runs)
        except Exception:
            log.warning("could not push the analysis of %s", service, exc_info=True)

    analyzer = Analyzer(providers(verify.get("templates", {})), log=runner.log)

    def measured(run: Any, measurement: Any) -> None:
        push([r.to_dict() for r in analyzer.runs])
        if measurement.value is not None:
            metrics.value(policy, service, run.template, float(measurement.value))
        metrics.measurement(policy, service, run.template, measurement.verdict)

    analyzer.on_measurement = measured
    verified = VerifiedRollout(runner, analyzer)
    try:
        result = verified.apply(
            target,
            service=service,
            canary=list(verify.get("canary", [])),
            analyses=[templates[n] for n in verify.get("analyses", []) if n in templates],
            templates=templates,
            deadline_seconds=deadline_seconds,
            dry_run=dry_run,
            run_id=str(context.get("run_id", "")),
            progress=progress,
        )
    finally:
        push([r.to_dict() for r in analyzer.runs])
        if verified.steps:
            try:
                ti.xcom_push(key="canary", value=list(verified.steps))
            except Exception:
                log.warning("could not push the canary steps of %s", service, exc_info=True)
        for run in analyzer.runs:
            if run.phase != "running" and not run.dry_run:
                metrics.finished(policy, service, run.template, run.phase)
    return result


def _number(value: Any) -> str:
    return "no data" if value is None else f"{float(value):.6g}"


def failure_lines(runs: Any) -> list[str]:
    """One line per failed or inconclusive analysis: template, where, query, values that failed.

    ``runs`` is a rollout task's XCom ``analysis`` (``AnalysisRun.to_dict()`` list);
    dry runs and successful analyses give nothing.
    """
    out = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, Mapping) or run.get("dryRun"):
            continue
        phase = str(run.get("phase"))
        if phase not in ("failed", "inconclusive"):
            continue
        measurements = [m for m in run.get("measurements") or () if isinstance(m, Mapping)]
        verdict = "fail" if phase == "failed" else "inconclusive"
        values = ", ".join(
            _number(m.get("value")) for m in measurements if m.get("verdict") == verdict
        )
        query = " ".join(str(run.get("query") or "").split())
        out.append(
            f"{run.get('service')}: analysis {run.get('template')} ({run.get('where')}) {phase}: "
            f"values {values or 'none'} outside {run.get('range')}; query: {query}"
        )
    return out


def failed_analyses(context: Mapping[str, Any], failed_tasks: list[str]) -> list[str]:
    """:func:`failure_lines` of the failed rollout tasks of the context's run (never raises)."""
    given = context.get("convoy_analyses")
    if given is not None:
        return failure_lines(given)
    ti = context.get("ti") or context.get("task_instance")
    out: list[str] = []
    for task_id in failed_tasks:
        if ti is None or ".rollout_" not in f".{task_id}":
            continue
        try:
            out += failure_lines(ti.xcom_pull(task_ids=task_id, key=ANALYSIS_KEY))
        except Exception:
            log.debug("analysis of %s not readable", task_id, exc_info=True)
    return out
