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
from typing import Any, NoReturn

from convoy.observe import analysis_metrics as metrics
from convoy.policy.models import Policy
from convoy.redaction import get_logger

log = get_logger(__name__)

#: XCom key of a rollout task's analyses (list of ``AnalysisRun.to_dict()``).
ANALYSIS_KEY = "analysis"


def verify_kwargs(policy: Policy, service: str) -> dict[str, Any]:
    """The verification of a service's rollout (:func:`convoy.plan.verify.service_verify`)."""
    from convoy.plan.verify import service_verify

    return service_verify(policy, service)


#: The rollout task's ``verify`` argument: "this step is verified; its spec is in the run record".
FROM_RUN_RECORD = {"fromRunRecord": True}


def rollout_kwargs(policy: Policy, service: str) -> dict[str, Any]:
    """``{"verify": FROM_RUN_RECORD}`` for a verified service's rollout task, else ``{}``.

    The spec itself (queries with ``{{ variables }}``) is frozen by preflight in
    the run record: task arguments are Jinja templates to Airflow, and the run
    executes what preflight froze. Leaving the key out keeps the serialized DAG
    of policies without analyses unchanged.
    """
    return {"verify": dict(FROM_RUN_RECORD)} if verify_kwargs(policy, service) else {}


class ProviderSecretRequired(ValueError):
    """A rollout pod reads analysis providers from Kubernetes Secrets; a template names none."""


def require_pod_secrets(policy: Policy) -> None:
    """Raise :class:`ProviderSecretRequired` when a template has no ``secretRef``.

    The loader refuses that for ``execution: kubernetes``; this catches a
    ``local`` policy run in pods through ``CONVOY_EXECUTION_MODE``, which would
    otherwise roll out with analyses that cannot reach their provider.
    """
    missing = []
    for template in policy.analysis_templates:
        provider = template.provider.prometheus or template.provider.http
        if provider is not None and provider.secret_ref is None:
            missing.append(template.name)
    if missing:
        raise ProviderSecretRequired(
            f"analysis templates {', '.join(missing)}: rollout pods (execution: kubernetes) read "
            "the provider from a Kubernetes Secret; give each provider a secretRef "
            "(docs/rollout.md, Execution modes)"
        )


def _run_record(context: Mapping[str, Any]) -> Any:
    from convoy.airflow.preflight import run_record

    return run_record(context)


def frozen_verify(
    context: Mapping[str, Any], service: str, given: Mapping[str, Any]
) -> dict[str, Any]:
    """The service's verification as preflight froze it (``given`` if it is a full spec)."""
    if "templates" in given:
        return dict(given)
    return dict(getattr(_run_record(context), "verify", {}).get(service) or {})


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
    resume: Mapping[str, Any] | None = None,
) -> Any:
    """Run the step through its canary and analyses; returns a ``VerifiedResult``.

    On a failed or inconclusive analysis the measurements are pushed first,
    then the error propagates (non-retriable: the task fails at once and the
    rollback runs). With an approval gate in the run's plan, an inconclusive
    analysis parks the task for a decision instead
    (:mod:`convoy.airflow.inconclusive`); ``resume`` is the answer and the
    checkpoint it parked with.
    """
    from convoy.airflow import inconclusive
    from convoy.rollout.analysis import AnalysisInconclusive, AnalysisSpec, Analyzer
    from convoy.rollout.canary import Checkpoint, VerifiedRollout

    ti = context["ti"]
    service = str(step["service"])
    policy = str(getattr(ti, "dag_id", "") or "")
    verify = frozen_verify(context, service, verify)
    templates = {n: AnalysisSpec.from_dict(d) for n, d in verify.get("templates", {}).items()}
    canary = list(verify.get("canary", []))
    analyses = [templates[n] for n in verify.get("analyses", []) if n in templates]

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
    approval = None if dry_run else inconclusive.gate(context, _run_record(context))
    checkpoint = Checkpoint.from_dict(resume["checkpoint"]) if resume else None
    # Runs the parked try already counted in the metrics.
    counted = len(checkpoint.runs) if checkpoint is not None else 0
    try:
        if checkpoint is not None:
            checkpoint = _decided(verified, checkpoint, resume or {}, approval)
        result = verified.apply(
            target,
            service=service,
            canary=canary,
            analyses=analyses,
            templates=templates,
            deadline_seconds=deadline_seconds,
            dry_run=dry_run,
            run_id=str(context.get("run_id", "")),
            progress=progress,
            resume=checkpoint,
        )
    except AnalysisInconclusive:
        stopped = verified.checkpoint()
        if approval is None or stopped is None or not analyzer.runs:
            raise
        _ask_approver(
            context,
            approval,
            analyzer,
            target,
            resumed=checkpoint is not None,
            then=_then(stopped.stage, stopped.index, canary, analyses),
            checkpoint=stopped.to_dict(),
        )
    finally:
        push([r.to_dict() for r in analyzer.runs])
        if verified.steps:
            try:
                ti.xcom_push(key="canary", value=list(verified.steps))
            except Exception:
                log.warning("could not push the canary steps of %s", service, exc_info=True)
        for run in analyzer.runs[counted:]:
            if run.phase != "running" and not run.dry_run:
                metrics.finished(policy, service, run.template, run.phase)
    return result


def _decided(verified: Any, checkpoint: Any, resume: Mapping[str, Any], approval: Any) -> Any:
    """The checkpoint with the approver's decision on its analysis; raises unless approved."""
    from dataclasses import replace

    from convoy.rollout.analysis import AnalysisInconclusive, AnalysisRun

    runs = [AnalysisRun.from_dict(r) for r in checkpoint.runs]
    if not runs:
        raise ValueError("a checkpoint of an inconclusive analysis carries its runs")
    try:
        decide_last(runs, resume.get("event"), approval)
    except AnalysisInconclusive:
        # What the task pushes on its way out: the runs and steps of the parked try.
        verified.analyzer.runs = runs
        verified.steps = [dict(s) for s in checkpoint.steps]
        raise
    return replace(checkpoint, runs=[r.to_dict() for r in runs])


def decide_last(runs: list[Any], event: Any, approval: Any) -> None:
    """Record the approver's answer on the last (inconclusive) run; raises unless approved."""
    from convoy.airflow import inconclusive
    from convoy.rollout.analysis import AnalysisInconclusive

    approved, text = inconclusive.decision(event, approval)
    runs[-1].decision = text
    log.info("%s: %s", runs[-1].summary(), text)
    if not approved:
        raise AnalysisInconclusive(runs[-1], runs)


def _then(stage: str, index: int, canary: list[Any], analyses: list[Any]) -> str:
    """What approving does, for the approver."""
    if stage == "canary":
        if index < len(canary):
            step = ", ".join(f"{k}: {v}" for k, v in dict(canary[index]).items())
            return f"the canary goes on with step {index + 1} ({step})"
        return "the canary rolls out the remaining pods"
    if index + 1 < len(analyses):
        return f"the next analysis after the rollout ({analyses[index + 1].name}) runs"
    return "the step completes"


def _number(value: Any) -> str:
    return "no data" if value is None else f"{float(value):.6g}"


def failure_lines(runs: Any) -> list[str]:
    """One line per failed or inconclusive analysis: template, where, query, values that failed.

    ``runs`` is a rollout task's XCom ``analysis`` (``AnalysisRun.to_dict()`` list);
    dry runs, successful analyses and approved inconclusive ones give nothing.
    """
    out = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, Mapping) or run.get("dryRun"):
            continue
        phase = str(run.get("phase"))
        decision = str(run.get("decision") or "")
        if phase not in ("failed", "inconclusive") or decision.startswith("approved"):
            continue  # an approved inconclusive analysis did not fail the step
        if decision:
            phase += f" ({decision})"
        measurements = [m for m in run.get("measurements") or () if isinstance(m, Mapping)]
        verdict = "fail" if phase.startswith("failed") else "inconclusive"
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
        if ti is None or not (".rollout_" in f".{task_id}" or task_id.endswith(f".{WAVE_TASK_ID}")):
            continue
        try:
            out += failure_lines(ti.xcom_pull(task_ids=task_id, key=ANALYSIS_KEY))
        except Exception:
            log.debug("analysis of %s not readable", task_id, exc_info=True)
    return out


#: Task id (in the wave's group) of ``rollout.waveAnalysis``.
WAVE_TASK_ID = "analysis"


def wave_analysis(
    *,
    wave: int,
    conn_id: str,
    in_cluster: bool,
    resume: Mapping[str, Any] | None = None,
    **context: Any,
) -> list[dict[str, Any]]:
    """``rollout.waveAnalysis`` after every rollout of wave ``wave``: each template, per service.

    The wave proves itself as a whole: once the last of its services rolled
    out, every template is measured again for each service of the wave (with
    that service's variables, ``where`` = ``wave N``). The first failed or
    inconclusive analysis fails the task at once (not retried) and the rollback
    runs; with an approval gate in the run's plan an inconclusive one parks the
    task for a decision (:mod:`convoy.airflow.inconclusive`; ``resume`` is the
    answer and where it stopped). A dry run measures each once and never fails.
    The runs are pushed as XCom ``analysis``.
    """
    from convoy.airflow import inconclusive
    from convoy.rollout.analysis import (
        AnalysisInconclusive,
        AnalysisRun,
        AnalysisSpec,
        Analyzer,
        require,
    )
    from convoy.rollout.canary import VerifiedRollout
    from convoy.rollout.runner import RolloutRunner, Target

    frozen = _run_record(context)
    spec = dict(getattr(frozen, "wave_verify", {}) or {})
    steps = [s for w in frozen.plan.waves if w.index == wave for s in w.steps]
    ti = context["ti"]
    if not spec or not steps:
        log.info("wave %d: no wave analysis to run", wave)
        return []
    dry_run = bool(frozen.dry_run)
    templates = {n: AnalysisSpec.from_dict(d) for n, d in spec.get("templates", {}).items()}
    names = [n for n in spec.get("analyses", []) if n in templates]
    from convoy.airflow.local_rollout import kube_api_client

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log.info)
    analyzer = Analyzer(providers(spec.get("templates", {})), log=log.info)
    policy = str(getattr(ti, "dag_id", "") or frozen.policy_name)
    approval = None if dry_run else inconclusive.gate(context, frozen)
    # (service index, template index) of the analysis a resumed task was parked on.
    done: tuple[int, int] = (-1, -1)
    counted = 0
    if resume:
        checkpoint = dict(resume.get("checkpoint") or {})
        done = (int(checkpoint["step"]), int(checkpoint["template"]))
        analyzer.runs = [AnalysisRun.from_dict(r) for r in checkpoint.get("runs") or ()]
        counted = len(analyzer.runs)

    def push() -> None:
        try:
            ti.xcom_push(key=ANALYSIS_KEY, value=[r.to_dict() for r in analyzer.runs])
        except Exception:
            log.warning("could not push the analysis of wave %d", wave, exc_info=True)

    def measured(run: Any, measurement: Any) -> None:
        push()
        if measurement.value is not None:
            metrics.value(policy, run.service, run.template, float(measurement.value))
        metrics.measurement(policy, run.service, run.template, measurement.verdict)

    analyzer.on_measurement = measured
    verified = VerifiedRollout(runner, analyzer)
    try:
        if resume and analyzer.runs:
            decide_last(analyzer.runs, resume.get("event"), approval)
        for index, step in enumerate(steps):
            target = Target(step.namespace, step.kind, step.workload, dict(step.containers))
            if index < done[0]:
                continue
            obj = runner._get(target.ref)
            values = verified.query_values(step.service, target, obj)
            for number, name in enumerate(names):
                if (index, number) <= done:
                    continue
                run = analyzer.run(templates[name], values, service=step.service,
                                   where=f"wave {wave}", dry_run=dry_run)  # fmt: skip
                try:
                    require(run, analyzer.runs)
                except AnalysisInconclusive:
                    if approval is None:
                        raise
                    _ask_approver(
                        context,
                        approval,
                        analyzer,
                        target,
                        resumed=bool(resume),
                        then=_wave_then(wave, steps, names, index, number),
                        checkpoint={"step": index, "template": number},
                    )
    finally:
        push()
        for run in analyzer.runs[counted:]:
            if run.phase != "running" and not run.dry_run:
                metrics.finished(policy, run.service, run.template, run.phase)
    return [r.to_dict() for r in analyzer.runs]


def _ask_approver(
    context: Mapping[str, Any],
    approval: Any,
    analyzer: Any,
    target: Any,
    *,
    resumed: bool,
    then: str,
    checkpoint: Mapping[str, Any],
) -> NoReturn:
    """Park the task on its last (inconclusive) analysis for the approver, once per task try.

    A task resumed after an approval does not ask again (Airflow keeps one
    request per try): the analysis fails as not asked.
    """
    from convoy.airflow import inconclusive
    from convoy.rollout.analysis import AnalysisInconclusive

    run = analyzer.runs[-1]
    if resumed:
        run.decision = inconclusive.NOT_ASKED
        raise AnalysisInconclusive(run, analyzer.runs) from None
    run.decision = inconclusive.AWAITING
    inconclusive.park(
        context,
        approval,
        run=run.to_dict(),
        workload=f"{target.namespace}/{target.kind}/{target.name}",
        images=dict(target.containers),
        then=then,
        checkpoint={**checkpoint, "runs": [r.to_dict() for r in analyzer.runs]},
    )


def _wave_then(wave: int, steps: list[Any], names: list[str], index: int, number: int) -> str:
    """What approving a wave analysis does, for the approver."""
    if number + 1 < len(names):
        return f"wave {wave}'s analysis goes on with {names[number + 1]} of {steps[index].service}"
    if index + 1 < len(steps):
        return f"wave {wave}'s analysis goes on with {steps[index + 1].service}"
    return f"wave {wave} passes its analysis and the run goes on"


def service_runs(ti: Any, apply_id: str, service: str) -> list[Any]:
    """A service's analyses for the report: its rollout task's, then its wave analysis's."""
    runs = ti.xcom_pull(task_ids=apply_id, key=ANALYSIS_KEY)
    found = list(runs) if isinstance(runs, list) else []
    group = apply_id.rpartition(".")[0]
    if group:
        wave = ti.xcom_pull(task_ids=f"{group}.{WAVE_TASK_ID}", key=ANALYSIS_KEY)
        if isinstance(wave, list):
            found += [r for r in wave if isinstance(r, Mapping) and r.get("service") == service]
    return found
