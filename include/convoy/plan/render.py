"""Human-readable text of a plan (``convoy plan``; the DAG's ``doc_md``), redacted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convoy.plan.models import BEFORE_ROLLOUT, DatastorePhase, Plan, RevertDataStep
from convoy.redaction import redact


def _phase_lines(phase: DatastorePhase) -> list[str]:
    after = "all services" if phase.after is None else ", ".join(phase.after) or "nothing"
    lines = [f"  datastore {phase.datastore} ({phase.type}, conn {phase.conn_id}; after {after})"]
    if not phase.steps:
        lines.append("    (nothing to do)")
    lines.extend(f"    {s.stage}: {s.detail}" for s in phase.steps)
    return lines


def render_text(plan: Plan) -> str:
    """Waves with target images, datastore stages where they run, rollback order."""
    out = [
        f"Plan {plan.policy_name}  digest {plan.digest[:12]}",
        f"namespace {plan.namespace}, execution {plan.execution}, "
        f"maxParallel {plan.max_parallel}, deadline {plan.deadline_seconds}s",
        f"services: {', '.join(plan.services)}",
        "",
    ]
    for phase in plan.phases_at(BEFORE_ROLLOUT):
        out.extend(["before rollout:", *_phase_lines(phase)])
    for wave in plan.waves:
        out.append(f"wave {wave.index}:")
        for step in wave.steps:
            deps = f"  (after {', '.join(step.depends_on)})" if step.depends_on else ""
            out.append(f"  {step.service}: {step.kind}/{step.workload}{deps}")
            out.extend(f"    {name} -> {image}" for name, image in step.containers)
        for phase in plan.phases_at(wave.index):
            out.extend(_phase_lines(phase))
    out.append("")
    if plan.approval is not None:
        out.append(
            f"approval: required from {', '.join(plan.approval.approvers)} after preflight "
            f"(timeout {plan.approval.timeout_minutes} min)"
        )
    if plan.rollback_automatic:
        out.append("rollback on failure (in this order):")
    else:
        out.append("rollback: manual (automatic: false); order would be:")
    out.extend(f"  {i}. {line}" for i, line in enumerate(_rollback_lines(plan), 1))
    return redact("\n".join(out) + "\n")


def _rollback_lines(plan: Plan) -> list[str]:
    lines = []
    for undo in plan.rollback:
        if isinstance(undo, RevertDataStep):
            lines.append(f"revert data of {undo.datastore} ({undo.type})")
        else:
            lines.append(
                f"revert images of {undo.service} ({undo.kind}/{undo.workload}, wave {undo.wave})"
            )
    return lines


def _code(text: str) -> str:
    # Backticks inside a code span would end it early; names and images never need them.
    return "`" + text.replace("`", "'") + "`"


def _md_phase(phase: DatastorePhase, migrations: Mapping[str, Sequence[str]]) -> list[str]:
    after = "all services" if phase.after is None else ", ".join(phase.after) or "nothing"
    lines = [f"- datastore {_code(phase.datastore)} ({phase.type}, after {after}):"]
    for step in phase.steps:
        if step.stage == "migrate" and migrations.get(phase.datastore):
            names = ", ".join(_code(m) for m in migrations[phase.datastore])
            lines.append(f"  - migrate: {names} (those not applied yet run, in this order)")
        else:
            lines.append(f"  - {step.stage}: {step.detail}")
    if not phase.steps:
        lines.append("  - nothing to do")
    return lines


def render_approval_markdown(
    plan: Plan,
    *,
    current: Mapping[str, Mapping[str, str]] | None = None,
    migrations: Mapping[str, Sequence[str]] | None = None,
    dry_run: bool = False,
) -> str:
    """What an approver decides on: the waves and the image diff, datastore steps, rollback.

    ``current`` (service -> container -> image now) turns the targets into a
    diff; a service missing from it shows its current images as unknown.
    ``migrations`` (datastore -> migration names) lists what ``migrate`` may apply.
    """
    now = current or {}
    changes = unchanged = 0
    out = [
        f"Upgrade **{plan.policy_name}** in namespace {_code(plan.namespace)}: "
        f"{len(plan.services)} service(s) in {len(plan.waves)} wave(s), "
        f"plan digest {_code(plan.digest[:12])}" + (" (dry run)" if dry_run else "") + ".",
        "",
        "Nothing has changed yet. *Approve* starts the rollout; *Reject*, or no answer "
        + (f"within {plan.approval.timeout_minutes} minutes, " if plan.approval is not None else "")
        + "ends the run without changing anything.",
        "",
    ]
    body: list[str] = []
    for phase in plan.phases_at(BEFORE_ROLLOUT):
        body += ["**Before the rollout**", "", *_md_phase(phase, migrations or {}), ""]
    for wave in plan.waves:
        body += [
            f"**Wave {wave.index}**",
            "",
            "| Service | Workload | Container | Now | After |",
            "|---|---|---|---|---|",
        ]
        for step in wave.steps:
            images = now.get(step.service)
            for container, target in step.containers:
                before = None if images is None else images.get(container)
                if before == target:
                    unchanged += 1
                    after = "unchanged"
                else:
                    changes += 1
                    after = _code(target)
                shown = "unknown" if before is None else _code(before)
                body.append(
                    f"| {_code(step.service)} | {step.kind}/{step.workload} "
                    f"| {_code(container)} | {shown} | {after} |"
                )
        body.append("")
        for phase in plan.phases_at(wave.index):
            body += [*_md_phase(phase, migrations or {}), ""]
    out.append(
        f"**{changes} container image(s) change**"
        + (f", {unchanged} already at the target." if unchanged else ".")
    )
    out += ["", *body]
    if plan.rollback_automatic:
        out += ["**Rollback on failure** (in this order)", ""]
        out += [f"{i}. {line}" for i, line in enumerate(_rollback_lines(plan), 1)]
    else:
        out.append("**Rollback**: manual (`rollback.automatic: false`).")
    return redact("\n".join(out) + "\n")


def render_rollback_approval_markdown(plan: Plan, run_id: str, *, dry_run: bool = False) -> str:
    """The body of the approval of a manual rollback (``mode=rollback``) of ``run_id``."""
    lines = [
        f"Manual rollback in **{plan.policy_name}** of run {_code(run_id)}"
        + (" (dry run)" if dry_run else "")
        + ": data first, then images newest wave first; only workloads that run "
        "changed last are reverted.",
        "",
        "Nothing has changed yet. *Approve* starts the reverts; *Reject*, or no answer"
        + (f" within {plan.approval.timeout_minutes} minutes," if plan.approval is not None else "")
        + " ends the run without reverting anything.",
        "",
    ]
    lines += [f"{i}. {line}" for i, line in enumerate(_rollback_lines(plan), 1)]
    return redact("\n".join(lines) + "\n")
