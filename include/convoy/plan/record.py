"""The run record: the plan frozen at preflight, the contract of every later task.

Preflight builds a :class:`RunRecord` from the policy it has just checked: the
run's plan (waves with their images, datastore phases, rollback order), every
datastore's specification as the policy gave it, and each migration file's
name, checksum and *content*. It is stored once for the run (XCom of
``preflight``) with its :attr:`RunRecord.digest`; every later task loads it
with :func:`record_from_json`, which recomputes that digest, and executes its
step from it. The policy file and the migration files are never read again
for the run: a file changed after preflight has no effect on it, and
:func:`drift` lists such files (with both digests) for the logs and the run
report. Pure: no Airflow import.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from convoy.plan.models import Plan, RolloutStep
from convoy.plan.specs import DatastoreSpec, datastore_spec
from convoy.policy.files import MIGRATION_MAX_BYTES, FileRefused, read_regular
from convoy.policy.loader import LoadedPolicy
from convoy.policy.migrations import MigrationFile, parse_version

RunMode = Literal["upgrade", "rollback"]


class RecordError(Exception):
    """The run record is missing, altered, or cannot be built."""


@dataclass(frozen=True)
class FrozenMigration:
    """One migration (``V``) or undo (``U``) file as preflight read it."""

    file: str
    kind: Literal["V", "U"]
    version_text: str
    description: str
    checksum: str
    has_down: bool
    content: str

    def to_migration_file(self, directory: Path) -> MigrationFile:
        """The engines' :class:`MigrationFile`, carrying the frozen bytes (checked here)."""
        data = self.content.encode("utf-8")
        found = hashlib.sha256(data).hexdigest()
        if found != self.checksum:
            raise RecordError(
                f"migration {self.file}: frozen content has sha256 {found}, "
                f"the record says {self.checksum}"
            )
        return MigrationFile(
            version=parse_version(self.version_text),
            version_text=self.version_text,
            description=self.description,
            kind=self.kind,
            path=directory / self.file,
            checksum=self.checksum,
            has_down=self.has_down,
            content=data,
        )


@dataclass(frozen=True)
class DatastoreRecord:
    """A datastore as the policy specified it at preflight, with its migration files."""

    name: str
    type: str
    conn_id: str
    #: What the engine executes (:mod:`convoy.plan.specs`).
    spec: DatastoreSpec
    #: The datastore's policy section (camelCase keys, as in the YAML): what
    #: the validation layer reads (its suites).
    policy: dict[str, Any]
    #: ``migrations`` of the policy, relative to :attr:`RunRecord.base_dir`.
    migrations_dir: str | None = None
    migrations: tuple[FrozenMigration, ...] = ()

    def migration_files(self, base_dir: str) -> tuple[MigrationFile, ...]:
        if self.migrations_dir is None:
            return ()
        directory = Path(base_dir) / self.migrations_dir
        return tuple(m.to_migration_file(directory) for m in self.migrations)


@dataclass(frozen=True)
class RunRecord:
    """Everything a run executes, frozen at preflight. ``digest`` covers the rest."""

    policy_name: str
    #: The policy file (resolved path) and the sha256 of its bytes at preflight.
    policy_file: str
    policy_sha256: str
    #: The policy's directory: what migration paths are relative to.
    base_dir: str
    #: Digest of the whole policy's plan (the one the DAG was built from).
    dag_plan_digest: str
    mode: RunMode
    dry_run: bool
    rollback_run_id: str | None
    #: This run's plan: the selection for an upgrade, the whole policy for a rollback.
    plan: Plan
    #: Every datastore of the policy (a manual rollback reverts any of them).
    datastores: tuple[DatastoreRecord, ...]
    #: Services and datastores whose forward steps run (empty for a rollback).
    selected_services: tuple[str, ...]
    selected_datastores: tuple[str, ...]
    #: Canary steps and analyses per service, and ``rollout.waveAnalysis``
    #: (:mod:`convoy.plan.verify`): the rollout tasks run these.
    verify: dict[str, dict[str, Any]] = field(default_factory=dict)
    wave_verify: dict[str, Any] = field(default_factory=dict)
    #: ``alerts.onFailure`` / ``onRollback`` as ``on_failure`` / ``on_rollback``:
    #: the targets the report task alerts (webhook tokens included, so the
    #: record is stored encrypted; ``convoy.airflow.preflight.seal``).
    alerts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    digest: str = field(default="", compare=False)

    def datastore(self, name: str) -> DatastoreRecord:
        for ds in self.datastores:
            if ds.name == name:
                return ds
        raise RecordError(f"datastore {name!r} is not in the plan frozen at preflight")

    def step(self, service: str) -> RolloutStep:
        try:
            return self.plan.step(service)
        except KeyError:
            raise RecordError(
                f"service {service!r} is not in the plan frozen at preflight"
            ) from None

    def migration_names(self) -> dict[str, list[str]]:
        """Datastore -> its forward migrations (``V2__add_status``), in order."""
        return {
            ds.name: [Path(m.file).stem for m in ds.migrations if m.kind == "V"]
            for ds in self.datastores
            if ds.migrations
        }

    def to_dict(self) -> dict[str, Any]:
        data = _content(self)
        data["digest"] = self.digest
        return data


def _content(record: RunRecord) -> dict[str, Any]:
    data = asdict(record)
    data.pop("digest")
    data["plan"] = record.plan.to_dict()
    return json.loads(json.dumps(data, sort_keys=True))  # type: ignore[no-any-return]


def compute_record_digest(record: RunRecord) -> str:
    """sha256 of the record's canonical JSON (sorted keys, no whitespace), digest excluded."""
    canonical = json.dumps(_content(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.cache
def _adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(RunRecord)


def record_from_json(data: Any, *, expected_digest: str | None = None) -> RunRecord:
    """The record stored by preflight, after checking its digest (and ``expected_digest``)."""
    if not isinstance(data, dict) or not data.get("digest"):
        raise RecordError("the run record of preflight is missing; was preflight skipped?")
    stored = str(data["digest"])
    try:
        record: RunRecord = _adapter().validate_python(data)
    except Exception as exc:
        raise RecordError(f"the run record cannot be read: {exc}") from exc
    found = compute_record_digest(record)
    if found != stored:
        raise RecordError(f"the run record was altered: digest {found} != {stored}")
    if expected_digest is not None and expected_digest != stored:
        raise RecordError(
            f"the run record has digest {stored}, preflight announced {expected_digest}"
        )
    return record


def _freeze_migration(path: Path, migration: MigrationFile) -> FrozenMigration:
    try:
        raw = read_regular(path, MIGRATION_MAX_BYTES, "migration file")
    except FileRefused as exc:
        raise RecordError(f"{path}: {exc}") from exc
    found = hashlib.sha256(raw).hexdigest()
    if found != migration.checksum:
        raise RecordError(
            f"{path} changed while preflight read it (sha256 {migration.checksum} -> {found})"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return FrozenMigration(
        file=path.name,
        kind=migration.kind,
        version_text=migration.version_text,
        description=migration.description,
        checksum=migration.checksum,
        has_down=migration.has_down,
        content=text,
    )


def freeze(
    loaded: LoadedPolicy,
    plan: Plan,
    *,
    dag_plan_digest: str,
    mode: RunMode,
    dry_run: bool,
    rollback_run_id: str | None = None,
) -> RunRecord:
    """The record of a run of ``plan`` (already resolved for the run's selection)."""
    base_dir = loaded.path.resolve().parent
    datastores = []
    for ds in loaded.policy.datastores:
        files = loaded.migrations.get(ds.name, ())
        datastores.append(
            DatastoreRecord(
                name=ds.name,
                type=ds.type,
                conn_id=ds.conn_id,
                spec=datastore_spec(ds),
                policy=ds.model_dump(mode="json", by_alias=True),
                migrations_dir=ds.migrations,
                migrations=tuple(_freeze_migration(f.path, f) for f in files),
            )
        )
    upgrade = mode == "upgrade"
    from convoy.plan.verify import verify_specs, wave_verify

    record = RunRecord(
        policy_name=loaded.policy.metadata.name,
        policy_file=str(loaded.path.resolve()),
        policy_sha256=loaded.source_sha256,
        base_dir=str(base_dir),
        dag_plan_digest=dag_plan_digest,
        mode=mode,
        dry_run=dry_run,
        rollback_run_id=rollback_run_id,
        plan=plan,
        datastores=tuple(datastores),
        selected_services=plan.services if upgrade else (),
        selected_datastores=tuple(p.datastore for p in plan.datastore_phases) if upgrade else (),
        verify=verify_specs(loaded.policy, plan.services) if upgrade else {},
        wave_verify=wave_verify(loaded.policy) if upgrade else {},
        alerts={
            "on_failure": tuple(loaded.policy.alerts.on_failure),
            "on_rollback": tuple(loaded.policy.alerts.on_rollback),
        },
    )
    return replace(record, digest=compute_record_digest(record))


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class Drift:
    """A file that differs from what the record froze (``None``: absent then or now)."""

    file: str
    frozen: str | None
    current: str | None

    def __str__(self) -> str:
        return f"{self.file}: sha256 {_short(self.frozen)} at preflight, {_short(self.current)} now"


def _short(digest: str | None) -> str:
    return "(absent)" if digest is None else digest[:12]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def drift(record: RunRecord) -> list[Drift]:
    """Files of the policy that changed since preflight (the run keeps the frozen ones).

    The policy file itself and every migration directory (files changed,
    removed or added). Reads bytes only; never loads the policy.
    """
    found: list[Drift] = []
    base = Path(record.base_dir)
    now = _sha256(Path(record.policy_file))
    if now != record.policy_sha256:
        found.append(Drift(_shown(Path(record.policy_file), base), record.policy_sha256, now))
    for ds in record.datastores:
        if ds.migrations_dir is None:
            continue
        directory = Path(record.base_dir) / ds.migrations_dir
        frozen = {m.file: m.checksum for m in ds.migrations}
        try:
            names = sorted(
                e.name
                for e in os.scandir(directory)
                if not e.name.startswith(".") and e.name != "__pycache__" and e.is_file()
            )
        except OSError:
            names = []
        for name in sorted(set(frozen) | set(names)):
            current = _sha256(directory / name) if name in names else None
            if current != frozen.get(name):
                found.append(Drift(_shown(directory / name, base), frozen.get(name), current))
    return found


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to the policy's directory when it is inside it."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def contract_note(record: RunRecord, changed: list[Drift]) -> str:
    """The run report's *Plan* line: what the run executed and what changed meanwhile."""
    note = f"executed as frozen at preflight (run record {record.digest[:12]})"
    if changed:
        listed = "; ".join(str(d) for d in changed)
        note += f"; changed since preflight and not used by this run: {listed}"
    return note
