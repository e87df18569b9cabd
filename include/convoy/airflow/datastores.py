"""Task callables of the datastore groups and of their rollback.

``datastore_<name>``: ``backup -> migrate -> partitions_<t> -> transform_<t>
(mapped over the partitions) ... -> validate``; ``rollback.revert_data_<name>``.

Each task executes its stage from the run record frozen by preflight
(:func:`convoy.airflow.preflight.run_record`: the datastore's specification and
its migration files with their contents, digest-checked), never from the
policy file as it is now. It builds the engine from the datastore's Airflow
connection and a :class:`~convoy.engines.base.RunContext` from the record and
the Airflow context, calls one engine stage and returns its ``to_dict()``
(also pushed under the XCom key ``result``). Connection strings and clients never reach a
log line, XCom or the report: engines log DSNs redacted and results carry no
credentials. Engine and provider modules are imported lazily.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from convoy.airflow import config, gates, retries, runtime
from convoy.airflow import preflight as preflight_task
from convoy.engines.base import DatastoreEngine, Partition, RunContext
from convoy.observe import metrics
from convoy.plan.record import DatastoreRecord, RecordError, RunRecord
from convoy.plan.specs import DatastoreSpec, PostgresSpec
from convoy.policy.models import Datastore as DatastoreModel
from convoy.policy.models import MongoDatastore, PostgresDatastore
from convoy.redaction import get_logger

log = get_logger(__name__)

Datastore = PostgresDatastore | MongoDatastore

#: States meaning "this task did (or tried to do) something in this run".
RAN_STATES = frozenset({"success", "failed", "up_for_retry", "running"})


# --------------------------------------------------------------------------- connections


def postgres_conninfo(conn_id: str) -> str:
    """psycopg conninfo of an Airflow connection, as ``PostgresHook.get_conn`` would connect.

    Host, port, login, password, database (``schema``) plus the connection's
    extras (``sslmode``, a Unix-socket ``host``, ...), minus the hook's own
    options. Never log the result.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg.conninfo import make_conninfo

    hook = PostgresHook(postgres_conn_id=conn_id)
    conn = hook.get_connection(conn_id)
    args: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema,
    }
    for key, value in conn.extra_dejson.items():
        if key not in hook.ignored_extra_options:
            args[key] = value
    return make_conninfo("", **{k: v for k, v in args.items() if v not in (None, "")})


def _hook_mongo_client(conn_id: str) -> Any:
    from airflow.providers.mongo.hooks.mongo import MongoHook

    return MongoHook(mongo_conn_id=conn_id).get_conn()


def _load_factory(spec: str) -> Callable[[str], Any]:
    module, sep, attr = spec.partition(":")
    if not sep:
        module, _, attr = spec.rpartition(".")
    if not module or not attr:
        raise AirflowFailException(
            f"{config.MONGO_CLIENT_FACTORY_ENV}={spec!r}: expected 'module:function'"
        )
    factory = getattr(importlib.import_module(module), attr)
    if not callable(factory):
        raise AirflowFailException(f"{config.MONGO_CLIENT_FACTORY_ENV}={spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


def mongo_client(conn_id: str) -> Any:
    """A pymongo-compatible client for ``conn_id``.

    ``MongoHook(mongo_conn_id=conn_id).get_conn()`` unless
    ``CONVOY_MONGO_CLIENT_FACTORY=module:function`` names another factory
    (called with the connection id; the tests use a mongomock client).
    """
    spec = os.environ.get(config.MONGO_CLIENT_FACTORY_ENV, "").strip()
    factory = _load_factory(spec) if spec else _hook_mongo_client
    return factory(conn_id)


# --------------------------------------------------------------------------- context


@functools.cache
def _datastore_adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(DatastoreModel)


def datastore_model(frozen: DatastoreRecord) -> Datastore:
    """The datastore's policy section as preflight froze it (for the validation layer)."""
    model: Datastore = _datastore_adapter().validate_python(frozen.policy)
    return model


class Frozen:
    """One datastore of the run record: its model, migration files and policy directory."""

    def __init__(self, record: RunRecord, name: str) -> None:
        try:
            entry = record.datastore(name)
            self.migrations = entry.migration_files(record.base_dir)
        except RecordError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.record = record
        self.entry = entry
        self.ds: DatastoreSpec = entry.spec
        self.base_dir = Path(record.base_dir)

    def run_context(self, context: Mapping[str, Any]) -> RunContext:
        return dataclasses.replace(
            run_context(self.record.policy_name, self.ds, self.base_dir, context),
            migrations=self.migrations,
        )


def frozen_datastore(context: Mapping[str, Any], name: str) -> Frozen:
    """``name`` from this run's record; logs the policy files changed since preflight."""
    record = preflight_task.run_record(context)
    preflight_task.log_drift(record)
    return Frozen(record, name)


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a datetime: {value!r}")
    # pendulum.DateTime -> plain aware datetime (binds as timestamptz everywhere)
    return dt.datetime.fromisoformat(value.isoformat()).astimezone(dt.UTC)


def _task_log(message: str) -> None:
    log.info("%s", message)


def run_context(
    policy_name: str, ds: DatastoreSpec, base_dir: Path, context: Mapping[str, Any]
) -> RunContext:
    return RunContext(
        policy_name=policy_name,
        run_id=str(context["run_id"]),
        datastore=ds,
        base_dir=base_dir,
        data_interval_start=_utc(context.get("data_interval_start")),
        data_interval_end=_utc(context.get("data_interval_end")),
        log=_task_log,
    )


def build_engine(ds: DatastoreSpec) -> DatastoreEngine:
    """The engine of ``ds`` connected through its Airflow connection."""
    from convoy.engines import EngineUnavailable, get_engine

    try:
        factory = get_engine(ds.type)
    except EngineUnavailable as exc:
        raise AirflowFailException(str(exc)) from exc
    if isinstance(ds, PostgresSpec):
        return factory(postgres_conninfo(ds.conn_id))
    return factory(mongo_client(ds.conn_id), ds.database)


class _Stage:
    """What every stage task needs: selection, datastore, context, engine."""

    def __init__(self, datastore: str, context: Mapping[str, Any]) -> None:
        chosen = preflight_task.selection(context)
        if datastore not in chosen["datastores"]:
            raise AirflowSkipException(f"datastore {datastore!r} not part of this run")
        self.dry_run = bool(chosen["dry_run"])
        frozen = frozen_datastore(context, datastore)
        self.policy_name, self.ds = frozen.record.policy_name, frozen.ds
        self.frozen = frozen
        self.ctx = frozen.run_context(context)
        self.context = context

    def engine(self) -> DatastoreEngine:
        return build_engine(self.ds)

    def reporting(self) -> RunContext:
        """``ctx`` whose engine stage pushes its progress as this task's XCom ``progress``."""
        return dataclasses.replace(self.ctx, progress=runtime.progress_sink(self.context["ti"]))

    def done(self, data: dict[str, Any]) -> dict[str, Any]:
        self.context["ti"].xcom_push(key=config.RESULT_KEY, value=data)
        return data


def _fail_deterministic(what: str, exc: Exception) -> None:
    """Engine refusals (checksums, unsafe input, failed migration...) are not retried."""
    retries.fail_unless_retriable(what, exc)


# --------------------------------------------------------------------------- stages


def backup(*, datastore: str, **context: Any) -> dict[str, Any]:
    stage = _Stage(datastore, context)
    try:
        result = stage.engine().backup(stage.reporting(), dry_run=stage.dry_run)
    except Exception as exc:
        _fail_deterministic(f"backup of {datastore}", exc)
        raise
    return stage.done(result.to_dict())


def migrate(*, datastore: str, **context: Any) -> dict[str, Any]:
    stage = _Stage(datastore, context)
    try:
        result = stage.engine().migrate(stage.reporting(), dry_run=stage.dry_run)
    except Exception as exc:
        _fail_deterministic(f"migrations of {datastore}", exc)
        raise
    data = stage.done(result.to_dict())
    if not stage.dry_run:
        applied = [m for m in data.get("applied") or () if m.get("status") == "applied"]
        metrics.migrations_applied(stage.policy_name, datastore, len(applied))
    return data


def partitions(*, datastore: str, transform: str, **context: Any) -> list[list[dict[str, Any]]]:
    """Key ranges of one transform, as the ``op_args`` of each mapped transform task."""
    from convoy.engines.postgres.dry_run import WriteRefused

    stage = _Stage(datastore, context)
    try:
        parts = stage.engine().partitions(stage.ctx, transform, config.max_partitions())
    except Exception as exc:
        if stage.dry_run and not isinstance(exc, WriteRefused):
            # A dry run did not apply the migrations the transform may need; a `where`
            # that writes is an error the dry run exists to report.
            log.warning("%s/%s: dry run cannot partition yet: %s", datastore, transform, exc)
            return []
        _fail_deterministic(f"partitions of {datastore}/{transform}", exc)
        raise
    log.info("%s/%s: %d partition(s)", datastore, transform, len(parts))
    return [[p.to_dict()] for p in parts]


def transform(
    partition: Mapping[str, Any] | None,
    *,
    datastore: str,
    transform: str,
    **context: Any,
) -> dict[str, Any]:
    """One mapped instance: the transform over one key range."""
    stage = _Stage(datastore, context)
    part = Partition.from_dict(partition) if partition else None
    ctx = dataclasses.replace(stage.ctx, progress=TransformProgress(stage, transform))
    try:
        result = stage.engine().transform(ctx, transform, part, dry_run=stage.dry_run)
    except Exception as exc:
        _fail_deterministic(f"transform {datastore}/{transform}", exc)
        raise
    data = stage.done(result.to_dict())
    _transform_done(stage, transform, data)
    return data


class TransformProgress:
    """Progress sink of a running transform (``RunContext.progress``).

    The engine calls it at a bounded frequency (``CONVOY_PROGRESS_PUSH_INTERVAL_S``)
    and once at the end: it pushes the XCom ``progress`` and updates the gauges
    that describe a transform in flight (run ETA, rate, rows expected). The
    ``rows_transformed`` counter is sent once by the finished task, so a retried
    batch is never counted twice.
    """

    def __init__(self, stage: _Stage, transform: str) -> None:
        self.ti = stage.context["ti"]
        self.policy = stage.policy_name
        self.datastore = stage.ds.name
        self.transform = transform
        self.dry_run = stage.dry_run
        self._expected: int | None = None

    def __call__(self, value: Mapping[str, Any]) -> None:
        runtime.publish_progress(self.ti, value)
        if self.dry_run:
            return
        eta, rate, total = value.get("eta_seconds"), value.get("rate"), value.get("total")
        if isinstance(eta, int | float):
            metrics.run_eta(self.policy, float(eta))
        if isinstance(rate, int | float) and rate > 0:
            metrics.transform_rate(self.policy, self.datastore, self.transform, float(rate))
        if isinstance(total, int) and total != self._expected:
            self._expected = total
            metrics.transform_rows_expected(self.policy, self.datastore, self.transform, total)


def _transform_done(stage: _Stage, transform: str, data: Mapping[str, Any]) -> None:
    """Final ``progress`` XCom and the transform metrics of one mapped instance."""
    rows = int(data.get("rows_done") or 0)
    elapsed = float(data.get("elapsed_s") or 0.0)
    rate = rows / elapsed if elapsed > 0 else None
    matching = data.get("rows_matching")
    label = f"{stage.ds.name}/{transform}"
    if data.get("partition"):
        label += f" [{data['partition']}]"
    total = None if matching is None else int(matching)
    if total is None and not stage.dry_run:
        # A finished transform has done all there was (its result has no count).
        total = rows
    runtime.push_progress(
        stage.context["ti"],
        done=rows,
        total=total,
        unit="rows",
        rate=rate,
        eta_seconds=0,
        label=label,
    )
    if stage.dry_run:
        return
    name, ds = stage.policy_name, stage.ds.name
    metrics.rows_transformed(name, ds, transform, rows)
    if rate is not None:
        metrics.transform_rate(name, ds, transform, rate)
    if matching is not None:
        metrics.transform_rows_expected(name, ds, transform, int(matching))


def run_dir(policy_name: str, run_id: str, datastore: str) -> Path:
    root = os.environ.get(config.RUNS_DIR_ENV) or str(Path(tempfile.gettempdir()) / "convoy-runs")
    safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    path = Path(root) / policy_name / safe_run / datastore
    path.mkdir(parents=True, exist_ok=True)
    return path


def validate(*, datastore: str, **context: Any) -> dict[str, Any]:
    """Hand-off to ``convoy.validation``; blocking failures fail the task (rollback runs)."""
    stage = _Stage(datastore, context)
    try:
        from convoy.validation import validate_datastore  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name not in ("convoy.validation",):
            raise
        log.info("validation layer not installed")
        raise AirflowSkipException("validation layer not installed") from exc
    kwargs: dict[str, Any] = {"progress": runtime.progress_sink(context["ti"])}
    model = datastore_model(stage.frozen.entry)
    if isinstance(model, PostgresDatastore):
        kwargs["conninfo"] = postgres_conninfo(model.conn_id)
    else:
        kwargs["mongo_client"] = mongo_client(model.conn_id)
    report = validate_datastore(
        model,
        run_dir=run_dir(stage.policy_name, stage.ctx.run_id, datastore),
        log=_task_log,
        **kwargs,
    )
    data = dict(report.to_dict())
    data["dryRun"] = stage.dry_run
    stage.done(data)
    outcomes = [o for o in data.get("outcomes") or () if isinstance(o, Mapping)]
    passed = sum(1 for o in outcomes if o.get("success"))
    metrics.validation_expectations(stage.policy_name, datastore, passed, len(outcomes) - passed)
    failures = list(report.blocking_failures)
    if failures and not stage.dry_run:
        listed = "; ".join(str(f) for f in failures)
        raise AirflowFailException(f"validation of {datastore} failed: {listed}")
    if failures:
        log.warning("dry run: validation of %s would fail: %s", datastore, failures)
    return data


# --------------------------------------------------------------------------- rollback


def revert(
    *,
    datastore: str,
    stage_task_ids: list[str],
    mapped_task_ids: list[str],
    **context: Any,
) -> dict[str, Any]:
    """Undo what this run did to the datastore (undo files, else the backup).

    A no-op (never a skip: it would cascade to older reverts) when the gate
    did not open, in a dry run, or when no stage of the datastore ran.
    Idempotent: a second revert of the same run finds nothing to do.
    """
    if not gates.rollback_open(context):
        return {"datastore": datastore, "reverted": False, "reason": "rollback not requested"}
    target = preflight_task.manual_rollback_of(context)
    if target is None:
        states = gates.run_states(context)
        mapped = set(mapped_task_ids)
        ran = [
            t
            for t in stage_task_ids
            if RAN_STATES.intersection(gates.states_of(states, t, mapped=t in mapped))
        ]
        if not ran:
            log.info("%s: no step ran in this run: nothing to revert", datastore)
            return {"datastore": datastore, "reverted": False, "reason": "no step ran in this run"}
    frozen = frozen_datastore(context, datastore)
    ds = frozen.ds
    ctx = dataclasses.replace(
        frozen.run_context(context), progress=runtime.progress_sink(context["ti"])
    )
    if target is not None:
        # Manual rollback: the engine reverts what the target run applied.
        log.info("%s: reverting the data changes of run %s", datastore, target)
        ctx = dataclasses.replace(ctx, run_id=target)
    from convoy.engines.errors import RevertIncomplete

    try:
        result = build_engine(ds).revert(ctx, dry_run=False)
    except RevertIncomplete as exc:
        # What was reverted still reaches the report (as this task's return value,
        # which Airflow does not push for a failed task); the task ends failed so
        # the rollback is reported incomplete with the way to finish it.
        partial = {
            "datastore": datastore,
            "reverted": False,
            "incomplete": True,
            "refused": list(exc.refused),
            "result": exc.result.to_dict(),
        }
        context["ti"].xcom_push(key=config.RESULT_KEY, value=partial)
        context["ti"].xcom_push(key="return_value", value=partial)
        raise AirflowFailException(f"revert of {datastore}: {exc}") from exc
    except Exception as exc:
        _fail_deterministic(f"revert of {datastore}", exc)
        raise
    data = {"datastore": datastore, "reverted": True, "result": result.to_dict()}
    context["ti"].xcom_push(key=config.RESULT_KEY, value=data)
    return data


def complete(*, datastores: list[str], **context: Any) -> list[str]:
    """End the run's in-flight datastore work (triggers, write capture); never raises.

    Runs at the end of every run whose data was not reverted: a reverted
    datastore was completed by its revert, which is idempotent with this.
    """
    done: list[str] = []
    try:
        chosen = preflight_task.selection(context)
    except Exception:
        log.warning("no preflight result: no datastore work to complete")
        return done
    if chosen.get("dry_run") or preflight_task.manual_rollback_of(context) is not None:
        return done
    for name in datastores:
        if name not in chosen["datastores"]:
            continue
        try:
            frozen = Frozen(preflight_task.run_record(context), name)
            ctx = frozen.run_context(context)
            done += [f"{name}: {line}" for line in build_engine(frozen.ds).complete(ctx)]
        except Exception:
            log.exception("%s: could not complete the run's datastore work", name)
    return done
