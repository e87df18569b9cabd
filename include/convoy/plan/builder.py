"""Policy -> :class:`~convoy.plan.models.Plan`. Pure and deterministic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from convoy.plan.errors import PlanError
from convoy.plan.models import (
    BEFORE_ROLLOUT,
    ApprovalGate,
    DatastorePhase,
    DatastoreStage,
    DatastoreStep,
    Plan,
    Position,
    RevertDataStep,
    RevertImagesStep,
    RollbackStep,
    RolloutStep,
    Wave,
    compute_digest,
)
from convoy.policy.loader import LoadedPolicy
from convoy.policy.models import Datastore, Policy


def expand_subset(policy: Policy, services: Iterable[str] | None) -> tuple[str, ...]:
    """The chosen services plus everything they transitively depend on, sorted.

    ``None`` or an empty selection means every service.
    """
    by_name = {s.name: s for s in policy.services}
    chosen = sorted(set(services or ()))
    if not chosen:
        return tuple(sorted(by_name))
    unknown = [name for name in chosen if name not in by_name]
    if unknown:
        raise PlanError(
            f"unknown service(s) {', '.join(repr(u) for u in unknown)}; "
            f"known: {', '.join(sorted(by_name))}"
        )
    selected: set[str] = set()
    stack = list(chosen)
    while stack:
        name = stack.pop()
        if name in selected:
            continue
        selected.add(name)
        stack.extend(d for d in by_name[name].depends_on if d in by_name)
    return tuple(sorted(selected))


def topological_levels(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Kahn's algorithm by levels; names in a level sorted. Edges to unknown names ignored."""
    remaining = {n: {d for d in ds if d in deps and d != n} for n, ds in deps.items()}
    for name, ds in deps.items():
        if name in ds:
            raise PlanError(f"service {name!r} depends on itself")
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(n for n, ds in remaining.items() if ds <= done)
        if not ready:
            raise PlanError(f"dependency cycle among: {', '.join(sorted(remaining))}")
        levels.append(ready)
        done.update(ready)
        for n in ready:
            del remaining[n]
    return levels


def _waves(policy: Policy, selected: tuple[str, ...]) -> tuple[Wave, ...]:
    """One wave per ``dependsOn`` level, however wide.

    ``maxParallel`` does not cut a level into chunks: it caps how many
    services run at once (the DAG's ``max_active_tasks``), and a service
    starts as soon as its own dependencies are done and a slot is free.
    """
    by_name = {s.name: s for s in policy.services}
    levels = topological_levels({n: by_name[n].depends_on for n in selected})
    namespace = policy.kubernetes.namespace
    return tuple(
        Wave(
            index=index,
            steps=tuple(
                RolloutStep(
                    service=name,
                    namespace=namespace,
                    kind=by_name[name].workload.kind,
                    workload=by_name[name].workload.name,
                    containers=tuple(sorted(by_name[name].containers.items())),
                    depends_on=tuple(sorted(d for d in by_name[name].depends_on if d in selected)),
                    wave=index,
                )
                for name in level
            ),
        )
        for index, level in enumerate(levels)
    )


def _stage_details(ds: Datastore) -> list[tuple[DatastoreStage, str]]:
    stages: list[tuple[DatastoreStage, str]] = []
    if ds.backup != "none":
        stages.append(("backup", ds.backup))
    if ds.migrations:
        stages.append(("migrate", ds.migrations))
    if ds.transforms:
        stages.append(("transform", ", ".join(t.name for t in ds.transforms)))
    if ds.validation:
        targets = [
            str(getattr(v, "table", None) or getattr(v, "collection", "")) for v in ds.validation
        ]
        stages.append(("validate", ", ".join(targets)))
    return stages


def _position(ds: Datastore, waves: tuple[Wave, ...], selected: set[str]) -> Position | None:
    """Where the phase runs; ``None`` if the datastore is not part of this selection."""
    last = len(waves) - 1
    if ds.after is None:
        return last if waves else BEFORE_ROLLOUT
    if not ds.after:
        return BEFORE_ROLLOUT
    chosen = [a for a in ds.after if a in selected]
    if not chosen:
        return None
    wave_of = {s.service: w.index for w in waves for s in w.steps}
    return max(wave_of[a] for a in chosen)


def _phases(
    policy: Policy, waves: tuple[Wave, ...], selected: set[str]
) -> tuple[DatastorePhase, ...]:
    phases: list[DatastorePhase] = []
    for ds in policy.datastores:
        position = _position(ds, waves, selected)
        if position is None:
            continue
        steps = tuple(
            DatastoreStep(ds.name, ds.type, ds.conn_id, stage, detail, position)
            for stage, detail in _stage_details(ds)
        )
        phases.append(DatastorePhase(ds.name, ds.type, ds.conn_id, position, ds.after, steps))

    def order(p: DatastorePhase) -> tuple[int, str]:
        return (-1 if p.position == BEFORE_ROLLOUT else int(p.position), p.datastore)

    return tuple(sorted(phases, key=order))


def _rollback(
    waves: tuple[Wave, ...], phases: tuple[DatastorePhase, ...]
) -> tuple[RollbackStep, ...]:
    data: list[RollbackStep] = [
        RevertDataStep(p.datastore, p.type, p.conn_id, p.position)
        for p in reversed(phases)
        if p.steps
    ]
    images: list[RollbackStep] = [
        RevertImagesStep(s.service, s.namespace, s.kind, s.workload, s.wave)
        for w in reversed(waves)
        for s in reversed(w.steps)
    ]
    return (*data, *images)


def _approval(policy: Policy) -> ApprovalGate | None:
    settings = policy.approval
    if not settings.required:
        return None
    return ApprovalGate(tuple(settings.approvers), settings.timeout_minutes)


def build_plan(source: LoadedPolicy | Policy, *, services: Iterable[str] | None = None) -> Plan:
    """Turn a policy into its plan; ``services`` restricts it (dependencies included)."""
    policy = source.policy if isinstance(source, LoadedPolicy) else source
    selected = expand_subset(policy, services)
    waves = _waves(policy, selected)
    phases = _phases(policy, waves, set(selected))
    plan = Plan(
        policy_name=policy.metadata.name,
        namespace=policy.kubernetes.namespace,
        execution=policy.execution,
        max_parallel=policy.rollout.max_parallel,
        deadline_seconds=policy.rollout.progress_deadline_seconds,
        services=selected,
        waves=waves,
        datastore_phases=phases,
        rollback=_rollback(waves, phases),
        rollback_automatic=policy.rollback.automatic,
        approval=_approval(policy),
    )
    return _with_digest(plan)


def _with_digest(plan: Plan) -> Plan:
    from dataclasses import replace

    return replace(plan, digest=compute_digest(plan))
