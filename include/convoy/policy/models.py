"""Pydantic models of the v1 upgrade-policy format (see docs/policy.md).

The models check shape and single-field rules only. Rules that need the whole
policy or the file system (unknown ``dependsOn``, cycles, migration files...)
live in :mod:`convoy.policy.checks`, so that every problem in a file can be
reported at once with its position.

Scalars are strict: a value must already have the field's type in YAML.
Pydantic's lax mode would read ``maxParallel: yes`` as 1, ``2.0`` as 2,
``"300"`` as 300, ``startDate: 0`` as 1970-01-01 and ``!!binary`` bytes as
text, so a typo or a quoting slip would silently become a different policy.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from convoy.policy.analysis import AnalysisTemplate, Canary

API_VERSION = "convoy/v1"
KIND = "UpgradePolicy"


def _no_number(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        raise PydanticCustomError("date_type", "Input should be a valid date")
    return value


#: A YAML date or a ``YYYY-MM-DD`` string; never a number read as a Unix time.
StartDate = Annotated[dt.date, BeforeValidator(_no_number)]

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
    name: StrictStr = Field(description="DNS-1123 label; becomes the Airflow dag_id.")
    description: StrictStr = ""
    owner: StrictStr = "convoy"
    tags: tuple[StrictStr, ...] = ()


class Resources(_Model):
    """Requests/limits of the rollout runner pod (Kubernetes quantity strings)."""

    cpu_request: StrictStr = "50m"
    memory_request: StrictStr = "64Mi"
    cpu_limit: StrictStr = "500m"
    memory_limit: StrictStr = "256Mi"


class KubernetesSettings(_Model):
    namespace: StrictStr = Field(description="Namespace of every listed workload (DNS-1123 label).")
    conn_id: StrictStr = "kubernetes_default"
    in_cluster: StrictBool = False
    service_account: StrictStr = "convoy-rollout"
    runner_image: StrictStr = Field(description="Image of the rollout pods; pinned tag or digest.")
    resources: Resources = Resources()


class RolloutSettings(_Model):
    max_parallel: StrictInt = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Tasks of a run at once (the DAG's max_active_tasks): a service starts as soon "
            "as its dependencies are done and a slot is free."
        ),
    )
    progress_deadline_seconds: StrictInt = Field(
        600, ge=10, le=86_400, description="Time a service may take to become ready."
    )
    analysis: tuple[StrictStr, ...] = Field(
        (), description="Analysis templates run after every service's rollout (default)."
    )
    wave_analysis: tuple[StrictStr, ...] = Field(
        (), description="Analysis templates run after each wave as a whole."
    )


class Workload(_Model):
    kind: WorkloadKind
    name: StrictStr


class Service(_Model):
    name: StrictStr
    workload: Workload
    containers: dict[StrictStr, StrictStr] = Field(
        min_length=1, description="Container name -> new image (tag or digest)."
    )
    depends_on: tuple[StrictStr, ...] = Field((), description="Services to roll out first.")
    analysis: tuple[StrictStr, ...] | None = Field(
        None, description="Analysis templates after the rollout; replaces rollout.analysis."
    )
    canary: Canary | None = Field(None, description="Canary steps (Deployment, StatefulSet).")


class SqlTransform(_Model):
    name: StrictStr
    table: StrictStr
    key: StrictStr
    batch_size: StrictInt = Field(1000, ge=1, le=1_000_000, description="Rows per transaction.")
    where: StrictStr | None = Field(
        None,
        description="SQL condition; may use {{ data_interval_start }} / {{ data_interval_end }}.",
    )
    set_: dict[StrictStr, StrictStr] = Field(
        alias="set", min_length=1, description="Column -> SQL expression of its new value."
    )


class MongoTransform(_Model):
    name: StrictStr
    collection: StrictStr
    filter: dict[StrictStr, Any] = Field(
        default_factory=dict,
        description="Query; strings may use {{ data_interval_start }} / {{ data_interval_end }}.",
    )
    update: dict[StrictStr, Any] | list[dict[StrictStr, Any]] = Field(
        description="Update operators ($set, ...) or a pipeline of update stages."
    )
    batch_size: StrictInt = Field(1000, ge=1, le=1_000_000, description="Documents per batch.")


Expectation = dict[StrictStr, dict[StrictStr, Any]]


class SqlValidation(_Model):
    table: StrictStr
    expectations: tuple[Expectation, ...] = Field(min_length=1)
    on_failure: ValidationFailureMode = "rollback"


class MongoValidation(_Model):
    collection: StrictStr
    expectations: tuple[Expectation, ...] = Field(min_length=1)
    on_failure: ValidationFailureMode = "rollback"


class _DatastoreBase(_Model):
    name: StrictStr
    conn_id: StrictStr
    after: tuple[StrictStr, ...] | None = Field(
        None,
        description="Services to roll out first; [] = before any rollout; omitted = after all.",
    )
    migrations: StrictStr | None = Field(
        None, description="Directory, relative to the policy file."
    )


class PostgresDatastore(_DatastoreBase):
    type: Literal["postgres"]
    backup: BackupMode = "none"
    snapshot_tables: tuple[StrictStr, ...] = Field(
        (), description="Extra tables to snapshot besides those the run touches."
    )
    transforms: tuple[SqlTransform, ...] = ()
    validation: tuple[SqlValidation, ...] = ()


class MongoDatastore(_DatastoreBase):
    type: Literal["mongo"]
    database: StrictStr
    backup: Literal["none", "snapshot"] = "none"
    transforms: tuple[MongoTransform, ...] = ()
    validation: tuple[MongoValidation, ...] = ()


Datastore = Annotated[PostgresDatastore | MongoDatastore, Field(discriminator="type")]


class RollbackSettings(_Model):
    automatic: StrictBool = Field(
        True, description="On failure revert data (undo or backup), then images, newest first."
    )


class AlertSettings(_Model):
    on_failure: tuple[StrictStr, ...] = ()
    on_success: tuple[StrictStr, ...] = ()
    on_rollback: tuple[StrictStr, ...] = ()
    deadline_minutes: StrictInt | None = Field(None, ge=1)


class ApprovalSettings(_Model):
    required: StrictBool = Field(
        False, description="Wait for a human approval after preflight, before any change."
    )
    approvers: tuple[StrictStr, ...] = Field(
        (),
        description="Airflow user ids allowed to answer (the auth manager's user id; "
        "the user name with the simple auth manager). Required when required is true.",
    )
    timeout_minutes: StrictInt = Field(
        60,
        ge=1,
        le=10_080,
        description="How long to wait for an answer; no answer ends the run without changes.",
    )


class DriftCheck(_Model):
    schedule: StrictStr = Field(
        description="When to compare the live state with the policy: 5-field cron or an "
        "Airflow preset (@hourly...)."
    )


class Policy(_Model):
    api_version: Literal["convoy/v1"]
    kind: Literal["UpgradePolicy"]
    metadata: Metadata
    schedule: StrictStr | None = Field(
        None, description="5-field cron, Airflow preset (@daily...) or null for manual runs."
    )
    start_date: StartDate = dt.date(2026, 1, 1)
    execution: ExecutionMode = Field(
        "kubernetes",
        description="kubernetes: rollout steps run in pods; local: inside the Airflow task. "
        "CONVOY_EXECUTION_MODE overrides it.",
    )
    kubernetes: KubernetesSettings
    rollout: RolloutSettings = RolloutSettings()
    services: tuple[Service, ...] = Field(min_length=1)
    analysis_templates: tuple[AnalysisTemplate, ...] = Field(
        (), description="Named metric checks that services, canary steps and waves refer to."
    )
    datastores: tuple[Datastore, ...] = ()
    rollback: RollbackSettings = RollbackSettings()
    alerts: AlertSettings = AlertSettings()
    approval: ApprovalSettings = ApprovalSettings()
    drift_check: DriftCheck | None = Field(
        None,
        description="Adds the DAG <name>__drift: `convoy status` on this schedule, alerting "
        "alerts.onFailure on drift or degraded.",
    )
