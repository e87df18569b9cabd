"""Human-readable text of a plan (``convoy plan``; the DAG's ``doc_md``)."""

from __future__ import annotations

from convoy.plan.models import BEFORE_ROLLOUT, DatastorePhase, Plan, RevertDataStep


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
    if plan.rollback_automatic:
        out.append("rollback on failure (in this order):")
    else:
        out.append("rollback: manual (automatic: false); order would be:")
    for i, undo in enumerate(plan.rollback, 1):
        if isinstance(undo, RevertDataStep):
            out.append(f"  {i}. revert data of {undo.datastore} ({undo.type})")
        else:
            out.append(
                f"  {i}. revert images of {undo.service} ({undo.kind}/{undo.workload}, "
                f"wave {undo.wave})"
            )
    return "\n".join(out) + "\n"
