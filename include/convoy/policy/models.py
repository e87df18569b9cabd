"""Pydantic models of the v1 upgrade-policy format (see docs/policy.md).

The models check shape and single-field rules only. Rules that need the whole
policy or the file system (unknown ``dependsOn``, cycles, migration files...)
live in :mod:`convoy.policy.checks`, so that every problem in a file can be
reported at once with its position.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_VERSION = "convoy/v1"
KIND = "UpgradePolicy"

WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]
BackupMode = Literal["none", "snapshot", "pg_dump"]
ExecutionMode = Literal["kubernetes", "local"]
ValidationFailureMode = Literal["rollback", "report-only"]


class _Model(BaseModel):
    """Base for every policy object: camelCase keys in YAML, unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )


class Metadata(_Model):
    name: str = Field(description="DNS-1123 label; becomes the Airflow dag_id.")
    description: str = ""
    owner: str = "convoy"
    tags: tuple[str, ...] = ()


class Resources(_Model):
    """Requests/limits of the rollout runner pod (Kubernetes quantity strings)."""

    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "256Mi"


class KubernetesSettings(_Model):
    namespace: str = Field(description="Namespace of every listed workload (DNS-1123 label).")
    conn_id: str = "kubernetes_default"
    in_cluster: bool = False
    service_account: str = "convoy-rollout"
    runner_image: str = Field(description="Image of the rollout pods; pinned tag or digest.")
    resources: Resources = Resources()


class RolloutSettings(_Model):
    max_parallel: int = Field(4, ge=1, le=64, description="Services updated at once in a wave.")
    progress_deadline_seconds: int = Field(
        600, ge=10, le=86_400, description="Time a service may take to become ready."
    )


class Workload(_Model):
    kind: WorkloadKind
    name: str


class Service(_Model):
    name: str
    workload: Workload
    containers: dict[str, str] = Field(
        min_length=1, description="Container name -> new image (tag or digest)."
    )
    depends_on: tuple[str, ...] = Field((), description="Services to roll out first.")


class SqlTransform(_Model):
    name: str
    table: str
    key: str
    batch_size: int = Field(1000, ge=1, le=1_000_000, description="Rows per transaction.")
    where: str | None = Field(
        None,
        description="SQL condition; may use {{ data_interval_start }} / {{ data_interval_end }}.",
    )
    set_: dict[str, str] = Field(
        alias="set", min_length=1, description="Column -> SQL expression of its new value."
    )


class MongoTransform(_Model):
    name: str
    collection: str
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="Query; strings may use {{ data_interval_start }} / {{ data_interval_end }}.",
    )
    update: dict[str, Any] | list[dict[str, Any]] = Field(
        description="Update operators ($set, ...) or a pipeline of update stages."
    )
    batch_size: int = Field(1000, ge=1, le=1_000_000, description="Documents per batch.")


Expectation = dict[str, dict[str, Any]]


class SqlValidation(_Model):
    table: str
    expectations: tuple[Expectation, ...] = Field(min_length=1)
    on_failure: ValidationFailureMode = "rollback"


class MongoValidation(_Model):
    collection: str
    expectations: tuple[Expectation, ...] = Field(min_length=1)
    on_failure: ValidationFailureMode = "rollback"


class _DatastoreBase(_Model):
    name: str
    conn_id: str
    after: tuple[str, ...] | None = Field(
        None,
        description="Services to roll out first; [] = before any rollout; omitted = after all.",
    )
    migrations: str | None = Field(None, description="Directory, relative to the policy file.")


class PostgresDatastore(_DatastoreBase):
    type: Literal["postgres"]
    backup: BackupMode = "none"
    snapshot_tables: tuple[str, ...] = Field(
        (), description="Extra tables to snapshot besides those the run touches."
    )
    transforms: tuple[SqlTransform, ...] = ()
    validation: tuple[SqlValidation, ...] = ()


class MongoDatastore(_DatastoreBase):
    type: Literal["mongo"]
    database: str
    backup: Literal["none", "snapshot"] = "none"
    transforms: tuple[MongoTransform, ...] = ()
    validation: tuple[MongoValidation, ...] = ()


Datastore = Annotated[PostgresDatastore | MongoDatastore, Field(discriminator="type")]


class RollbackSettings(_Model):
    automatic: bool = Field(
        True, description="On failure revert data (undo or backup), then images, newest first."
    )


class AlertSettings(_Model):
    on_failure: tuple[str, ...] = ()
    on_success: tuple[str, ...] = ()
    on_rollback: tuple[str, ...] = ()
    deadline_minutes: int | None = Field(None, ge=1)


class ApprovalSettings(_Model):
    required: bool = Field(
        False, description="Wait for a human approval after preflight, before any change."
    )
    approvers: tuple[str, ...] = Field(
        (),
        description="Airflow user ids allowed to answer (the auth manager's user id; "
        "the user name with the simple auth manager). Required when required is true.",
    )
    timeout_minutes: int = Field(
        60,
        ge=1,
        le=10_080,
        description="How long to wait for an answer; no answer ends the run without changes.",
    )


class Policy(_Model):
    api_version: Literal["convoy/v1"]
    kind: Literal["UpgradePolicy"]
    metadata: Metadata
    schedule: str | None = Field(
        None, description="5-field cron, Airflow preset (@daily...) or null for manual runs."
    )
    start_date: dt.date = dt.date(2026, 1, 1)
    execution: ExecutionMode = Field(
        "kubernetes",
        description="kubernetes: rollout steps run in pods; local: inside the Airflow task. "
        "CONVOY_EXECUTION_MODE overrides it.",
    )
    kubernetes: KubernetesSettings
    rollout: RolloutSettings = RolloutSettings()
    services: tuple[Service, ...] = Field(min_length=1)
    datastores: tuple[Datastore, ...] = ()
    rollback: RollbackSettings = RollbackSettings()
    alerts: AlertSettings = AlertSettings()
    approval: ApprovalSettings = ApprovalSettings()
