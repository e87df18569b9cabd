"""``convoy status``: the live state of a policy's services and datastores, judged.

:func:`collect` reads the cluster (one LIST per workload kind and namespace)
and every datastore (read-only), through the connection functions it is
handed in :class:`Sources` (the CLI hands it Airflow's, from
:mod:`convoy.airflow.connections`); nothing here imports Airflow. A part that
cannot be read is reported as ``unknown`` with a one-line reason, and the
others are still read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convoy.engines.base import RunContext
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.postgres.config import PostgresConfig
from convoy.operate.model import BackupRun, DatastoreState, ServiceState, StatusReport
from convoy.plan.specs import datastore_spec
from convoy.policy import LoadedPolicy
from convoy.policy.models import MongoDatastore, Policy, PostgresDatastore
from convoy.redaction import redact

#: The run id of the contexts the operating commands build (history rows of a baseline).
STATUS_RUN_ID = "convoy-cli"

Datastore = PostgresDatastore | MongoDatastore


@dataclass(frozen=True)
class Sources:
    """Where the commands get their connections (the Airflow adapter, or tests)."""

    kube: Callable[[Policy], Any]
    postgres: Callable[[str], str]
    mongo: Callable[[str], Any]
    pg_config: PostgresConfig = field(default_factory=PostgresConfig)
    mongo_config: MongoConfig = field(default_factory=MongoConfig)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)


def context(
    loaded: LoadedPolicy, ds: Datastore, run_id: str = STATUS_RUN_ID, log: Any = None
) -> RunContext:
    kwargs: dict[str, Any] = {} if log is None else {"log": log}
    return RunContext(
        policy_name=loaded.policy.metadata.name,
        run_id=run_id,
        datastore=datastore_spec(ds),
        base_dir=loaded.path.resolve().parent,
        **kwargs,
    )


def services(loaded: LoadedPolicy, sources: Sources) -> list[ServiceState]:
    from convoy.operate.services import list_workloads, service_states, unreadable
    from convoy.rollout.api import KubernetesIO, RetryPolicy
    from convoy.rollout.errors import Forbidden

    policy = loaded.policy
    try:
        io = KubernetesIO(sources.kube(policy), RetryPolicy(attempts=2, base_seconds=0.2))
        workloads = list_workloads(io, policy)
    except Forbidden as exc:
        d = exc.details
        resource = f"{d['resource']}.{d['group']}" if d["group"] else str(d["resource"])
        return unreadable(
            policy,
            redact(
                f"cannot read the cluster: forbidden: {d['user'] or 'the client'} may not "
                f'{d["verb"]} {resource} in namespace "{d["namespace"]}"; bind it the '
                "read-only Role of `convoy render rbac --status POLICY`"
            ),
        )
    except Exception as exc:
        return unreadable(policy, f"cannot read the cluster: {one_line(exc)}")
    return service_states(policy, workloads)


def datastore(loaded: LoadedPolicy, ds: Datastore, sources: Sources) -> DatastoreState:
    try:
        if isinstance(ds, PostgresDatastore):
            from convoy.operate import postgres

            return postgres.inspect(sources.postgres(ds.conn_id), context(loaded, ds),
                                    sources.pg_config)  # fmt: skip
        from convoy.operate import mongo

        return mongo.inspect(
            sources.mongo(ds.conn_id), ds.database, context(loaded, ds), sources.mongo_config
        )
    except Exception as exc:
        error = one_line(exc)
        return DatastoreState(
            name=ds.name,
            type=ds.type,
            verdict="unknown",
            reasons=(f"cannot read it: {error}",),
            error=error,
        )


def collect(
    loaded: LoadedPolicy, sources: Sources, *, datastores_only: Sequence[str] | None = None
) -> StatusReport:
    return StatusReport(
        policy=loaded.policy.metadata.name,
        services=tuple(services(loaded, sources)),
        datastores=tuple(
            datastore(loaded, ds, sources)
            for ds in loaded.policy.datastores
            if datastores_only is None or ds.name in datastores_only
        ),
    )


# --------------------------------------------------------------------------- text


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _backups_line(backups: Sequence[BackupRun]) -> str:
    if not backups:
        return "none"
    total = sum(b.size_bytes for b in backups)
    runs = len(backups)
    return f"{runs} run{'s' if runs != 1 else ''}, {human_size(total)}"


def render_text(report: StatusReport) -> str:
    lines = [f"Status {report.policy}: {report.verdict}", "", "services:"]
    for s in report.services:
        replicas = s.replicas
        counts = (
            f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)} ready, "
            f"{replicas.get('updated', 0)} updated, {replicas.get('available', 0)} available"
            if replicas
            else ""
        )
        head = f"  {s.name}: {s.verdict}  ({s.kind}/{s.workload}, {s.condition}"
        head += f", {counts}" if counts else ""
        head += f", run {s.run_id})" if s.run_id else ")"
        lines.append(head)
        for c in s.containers:
            mark = "=" if c.live == c.target else "!="
            lines.append(f"    {c.name}: {c.live or '-'} {mark} {c.target}")
        lines.extend(f"    - {r}" for r in s.reasons)
    if report.datastores:
        lines += ["", "datastores:"]
    for d in report.datastores:
        lines.append(f"  {d.name} ({d.type}): {d.verdict}")
        if d.error is None:
            summary = d.summary()
            lines.append(
                "    versions: "
                + ", ".join(
                    f"{k} {','.join(summary[k]) or '-'}"
                    for k in ("applied", "pending", "failed", "reverted")
                )
            )
            lines.append(f"    lock: {d.lock or 'free'}")
            lines.append(f"    backups kept: {_backups_line(d.backups)}")
        lines.extend(f"    - {r}" for r in d.reasons)
    return "\n".join(lines)


def render_versions(d: DatastoreState) -> str:
    """``convoy db info``: one line per version, Flyway ``info`` style."""
    header = ("version", "description", "state", "checksum", "run", "installed on")
    rows = [header]
    for v in d.versions:
        rows.append(
            (
                v.version,
                v.description,
                v.state,
                (v.checksum or v.file_checksum or "")[:12],
                v.run_id or "",
                v.installed_on.strftime("%Y-%m-%d %H:%M:%S") if v.installed_on else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = [f"{d.name} ({d.type}): {d.verdict}"]
    for r in rows:
        out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    for v in d.versions:
        if v.note:
            out.append(f"  {v.version}: {v.note}")
    if d.lock:
        out.append(f"  lock held by {d.lock}")
    for cp in d.unfinished:
        out.append(
            f"  unfinished transform {cp.transform} {cp.partition} ({cp.rows_done} rows, "
            f"run {cp.run_id})"
        )
    return "\n".join(line.rstrip() for line in out)


def render_backups(d: str, runs: Sequence[BackupRun], pruned: Sequence[str] = ()) -> str:
    out = [f"{d}: {_backups_line(runs)}"]
    for run in runs:
        created = run.created.strftime("%Y-%m-%d %H:%M:%S") if run.created else "?"
        flag = f"  kept: {run.protected}" if run.protected else ""
        if run.run_id in pruned:
            flag = "  pruned"
        out.append(f"  run {run.run_id}  {created}  {human_size(run.size_bytes)}{flag}")
        for item in run.items:
            src = f" <- {item.source}" if item.source else ""
            state = " (restored)" if item.restored else ""
            out.append(f"    {item.kind}: {item.name}{src}  {human_size(item.size_bytes)}{state}")
    return "\n".join(out)
