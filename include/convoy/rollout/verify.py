"""Verified steps from a frozen spec: what ``python -m convoy.rollout verify|analyze`` runs.

The spec is the run record's (:mod:`convoy.plan.verify`): ``verify[service]``
for a service's rollout (canary steps, analyses after it, their templates) and
``wave_verify`` plus the wave's targets for ``rollout.waveAnalysis``. A rollout
pod runs the same :class:`~convoy.rollout.canary.VerifiedRollout` on the same
frozen spec as the Airflow task of ``execution: local``; only where the
providers come from differs (Secrets here, Airflow connections there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convoy.observe.progress import ProgressSink
from convoy.policy.analysis import seconds
from convoy.rollout.analysis import AnalysisRun, AnalysisSpec, Analyzer, require
from convoy.rollout.canary import Checkpoint, VerifiedResult, VerifiedRollout
from convoy.rollout.runner import RolloutRunner, Target


def templates(spec: Mapping[str, Any]) -> dict[str, AnalysisSpec]:
    return {n: AnalysisSpec.from_dict(d) for n, d in dict(spec.get("templates") or {}).items()}


def extra_seconds(spec: Mapping[str, Any], *, targets: int = 1) -> float:
    """The longest the spec's pauses and analyses take on top of the rollout's own deadline.

    A rollout pod's lifetime is capped (``activeDeadlineSeconds``): without this
    a canary with pauses and long analyses would be killed half-way, neither
    passed nor failed. Each measurement may wait the provider's full timeout.
    """
    from convoy.rollout.providers.prometheus import DEFAULT_TIMEOUT_S

    known = templates(spec)
    canary = list(spec.get("canary") or ())
    total = sum(seconds(str(step["pause"])) for step in canary if "pause" in step)
    names = [str(step["analysis"]) for step in canary if "analysis" in step]
    names += [str(n) for n in spec.get("analyses") or ()] * max(targets, 1)
    for name in names:
        if name in known:
            t = known[name]
            total += t.initial_delay_s + t.interval_s * (t.count - 1) + t.count * DEFAULT_TIMEOUT_S
    return total


def verify_apply(
    verified: VerifiedRollout,
    target: Target,
    spec: Mapping[str, Any],
    *,
    service: str,
    deadline_seconds: float,
    dry_run: bool,
    run_id: str | None,
    progress: ProgressSink | None = None,
    resume: Checkpoint | None = None,
) -> VerifiedResult:
    """Roll ``target`` out through the spec's canary steps, then its analyses.

    ``resume``: go on from where an earlier call stopped on an inconclusive analysis.
    """
    known = templates(spec)
    return verified.apply(
        target,
        service=service,
        canary=list(spec.get("canary") or ()),
        analyses=[known[n] for n in spec.get("analyses") or () if n in known],
        templates=known,
        deadline_seconds=deadline_seconds,
        dry_run=dry_run,
        run_id=run_id,
        progress=progress,
        resume=resume,
    )


def analyze_targets(
    runner: RolloutRunner,
    analyzer: Analyzer,
    targets: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
    *,
    where: str,
    dry_run: bool,
    resume: Mapping[str, Any] | None = None,
) -> list[AnalysisRun]:
    """Each of the spec's analyses for each target, with that target's variables.

    ``targets``: ``{"service", "namespace", "kind", "workload", "containers"}``.
    The first failed or inconclusive analysis raises (never in a dry run).
    ``resume``: an :func:`analyze_checkpoint` whose last run was approved; the
    analyses up to it are kept, not measured again.
    """
    known = templates(spec)
    verified = VerifiedRollout(runner, analyzer)
    done: tuple[int, int] = (-1, -1)
    if resume is not None:
        done = (int(resume["step"]), int(resume["template"]))
        analyzer.runs = [AnalysisRun.from_dict(r) for r in resume.get("runs") or ()]
    names = [n for n in spec.get("analyses") or () if n in known]
    for index, step in enumerate(targets):
        if index < done[0]:
            continue
        target = Target(
            str(step["namespace"]), str(step["kind"]), str(step["workload"]),
            {str(c): str(i) for c, i in dict(step.get("containers") or {}).items()},
        )  # fmt: skip
        service = str(step["service"])
        values = verified.query_values(service, target, runner._get(target.ref))
        for number, name in enumerate(names):
            if (index, number) <= done:
                continue
            run = analyzer.run(known[name], values, service=service, where=where, dry_run=dry_run)
            require(run, analyzer.runs)
    return list(analyzer.runs)


def analyze_checkpoint(
    targets: Sequence[Mapping[str, Any]], spec: Mapping[str, Any], runs: Sequence[AnalysisRun]
) -> dict[str, Any]:
    """Where :func:`analyze_targets` stopped: ``{"step", "template", "service", "runs"}``.

    The same checkpoint a local wave analysis parks with (``step``: the
    target's index, ``template``: the analysis's among the known ones), so
    either can be resumed from it. Every (target, analysis) pair measures once
    and in order, so the last run's position is the number of runs before it.
    """
    known = templates(spec)
    names = [n for n in spec.get("analyses") or () if n in known]
    if not runs or not names:
        raise ValueError("no analysis ran, so there is nowhere to go on from")
    step, template = divmod(len(runs) - 1, len(names))
    return {
        "step": step,
        "template": template,
        "service": str(targets[step]["service"]),
        "runs": [r.to_dict() for r in runs],
    }


__all__ = ["analyze_checkpoint", "analyze_targets", "extra_seconds", "templates", "verify_apply"]
