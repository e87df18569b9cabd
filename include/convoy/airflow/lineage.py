"""OpenLineage for convoy runs: what each task changed, and the ``convoy`` run facet.

Two hooks of the Airflow OpenLineage provider, both set in ``[openlineage]``
(docs/observability.md), so the DAG builder stays unaware of OpenLineage:

- ``custom_run_facets = convoy.airflow.lineage.convoy_run_facets``: every event
  of a convoy task carries a ``convoy`` run facet (:class:`ConvoyRunFacet`):
  policy name, plan digest, dry run, and the versions the task applied (per
  service the images before and after, per datastore the migrations applied,
  rows transformed, what a revert undid). Built only from task arguments and
  convoy's own XCom results (which never hold a secret), field by field, and
  redacted (:mod:`convoy.redaction`) all the same.
- ``extractors = convoy.airflow.lineage.ConvoyExtractor``: the output datasets
  of convoy tasks. Out of the box the provider turns ``postgres://`` and
  ``mongodb://`` outlets into datasets but drops ``k8s://`` workloads, and the
  revert tasks declare no outlets. The extractor adds the workloads, what a
  revert puts back (the outlets of the steps it reverts), and at the end of a
  migrate or revert the tables its SQL files touched (known only at run time).
  For any other ``PythonOperator`` it is the provider's ``PythonExtractor``.

Everything here runs in the task process after (or before) the task itself; a
failure is logged and leaves the event without convoy's additions, never fails
the task.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import attr
from airflow.providers.openlineage.extractors.base import OperatorLineage
from airflow.providers.openlineage.extractors.python import PythonExtractor
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import RunFacet

from convoy.airflow import assets, config, runtime
from convoy.airflow import preflight as preflight_task
from convoy.plan.record import FrozenMigration
from convoy.redaction import get_logger, redact_data

log = get_logger(__name__)

#: Key of the run facet in OpenLineage events.
FACET_KEY = "convoy"
FACET_SCHEMA_URL = "https://convoy.dev/spec/facets/1-0-0/ConvoyRunFacet.json#/$defs/ConvoyRunFacet"
#: Scheme of workload assets (``convoy.airflow.assets.workload_uri``); no provider converts it.
K8S_SCHEME = "k8s"


@attr.define
class ConvoyRunFacet(RunFacet):
    """What a convoy task did, for lineage consumers (Marquez, DataHub, ...).

    ``services``: ``{service: {workload, target, previous, applied, changed,
    reverted, restored}}`` (images per container). ``datastores``: ``{datastore:
    {migrationsApplied, migrationsPending, alreadyApplied, transforms: {name:
    {rowsDone, partitions}}, backup, backupTables, reverted, undone,
    restoredFromBackup}}``. Only the keys a task knows are present.
    """

    policy: str
    digest: str
    step: str
    dryRun: bool | None = None
    services: dict[str, dict[str, Any]] = attr.field(factory=dict)
    datastores: dict[str, dict[str, Any]] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


# --------------------------------------------------------------------------- task inspection


def _callable(task: Any) -> Any:
    return getattr(task, "python_callable", None)


def is_convoy_task(task: Any) -> bool:
    """A task laid out by convoy's DAG builder (its callable or operator class is convoy's)."""
    func = _callable(task)
    module = getattr(func, "__module__", None) if func is not None else type(task).__module__
    return str(module or "").startswith("convoy.")


def _op_kwargs(task: Any) -> Mapping[str, Any]:
    value = getattr(task, "op_kwargs", None)
    return value if isinstance(value, Mapping) else {}


def _callable_name(task: Any) -> str:
    return str(getattr(_callable(task), "__name__", ""))


def plan_digest(task: Any) -> str:
    """The plan digest the DAG was built with (an argument of its ``preflight``)."""
    dag = getattr(task, "dag", None)
    try:
        preflight = dag.get_task(config.PREFLIGHT) if dag is not None else None
    except Exception:  # a DAG without preflight is not convoy's
        return ""
    return str(_op_kwargs(preflight).get("digest") or "")


def _state(ti_state: Any) -> str:
    return str(getattr(ti_state, "value", ti_state) or "").lower()


def _pull(ti: Any, task_id: str, key: str) -> Any:
    kwargs: dict[str, Any] = {"task_ids": task_id, "key": key}
    if task_id == ti.task_id and getattr(ti, "map_index", -1) >= 0:
        kwargs["map_indexes"] = ti.map_index
    try:
        return ti.xcom_pull(**kwargs)
    except Exception:
        log.debug("convoy lineage: no XCom %s/%s", task_id, key, exc_info=True)
        return None


def task_result(ti: Any) -> dict[str, Any] | None:
    """The task's own result: convoy's ``result`` XCom, else its return value."""
    for key in (config.RESULT_KEY, "return_value"):
        value = _pull(ti, ti.task_id, key)
        if isinstance(value, Mapping):
            return dict(value)
    return None


# --------------------------------------------------------------------------- facet


def _images(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value]


def _service_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout or revert result, reduced to what lineage needs (no messages, no URLs)."""
    entry: dict[str, Any] = {}
    if {"namespace", "kind", "name"} <= result.keys():
        entry["workload"] = f"{result['namespace']}/{str(result['kind']).lower()}/{result['name']}"
    if "previousImages" in result:
        entry["previous"] = _images(result.get("previousImages"))
        entry["applied"] = _images(result.get("images"))
        entry["changed"] = bool(result.get("changed"))
    if "reverted" in result:
        entry["reverted"] = bool(result["reverted"])
        if result.get("images"):
            entry["restored"] = _images(result["images"])
    inner = result.get("result")
    if isinstance(inner, Mapping) and "previousImages" in inner:
        entry["workload"] = _service_entry(inner).get("workload", entry.get("workload"))
    return entry


def _datastore_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if isinstance(result.get("applied"), list):
        entry["migrationsApplied"] = [
            str(m.get("version"))
            for m in result["applied"]
            if isinstance(m, Mapping) and m.get("status") == "applied"
        ]
        entry["migrationsPending"] = _strings(result.get("pending"))
        entry["alreadyApplied"] = _strings(result.get("already_applied"))
    if "transform" in result:
        parts = [str(result["partition"])] if result.get("partition") else []
        rows = int(result.get("rows_done") or 0)
        entry["transforms"] = {str(result["transform"]): {"rowsDone": rows, "partitions": parts}}
    if "mode" in result and "tables" in result:
        entry["backup"] = str(result["mode"])
        entry["backupTables"] = _strings(result.get("tables"))
    if "reverted" in result:
        entry["reverted"] = bool(result["reverted"])
    inner = result.get("result")
    if isinstance(inner, Mapping) and "undone" in inner:
        entry["undone"] = _strings(inner.get("undone"))
        entry["restoredFromBackup"] = _strings(inner.get("restored_from_backup"))
    return entry


def _merge(target: dict[str, dict[str, Any]], name: str, entry: Mapping[str, Any]) -> None:
    """Add one task's entry; the mapped instances of a transform add up."""
    if not entry:
        return
    current = target.setdefault(name, {})
    for key, value in entry.items():
        if key != "transforms":
            current[key] = value
            continue
        for transform, done in value.items():
            total = current.setdefault("transforms", {}).setdefault(
                transform, {"rowsDone": 0, "partitions": []}
            )
            total["rowsDone"] += done["rowsDone"]
            total["partitions"] += done["partitions"]


def _service_of(task: Any) -> str:
    step = _op_kwargs(task).get("step")
    if isinstance(step, Mapping) and step.get("service"):
        return str(step["service"])
    return str(getattr(task, "service", "") or "")


def _step_of(task: Any) -> Mapping[str, Any] | None:
    """The rollout target of an apply task: its ``step`` argument, or the pod's arguments."""
    step = _op_kwargs(task).get("step")
    if isinstance(step, Mapping):
        return step
    args = [str(a) for a in getattr(task, "arguments", None) or ()]
    if not args or args[0] != "apply":
        return None
    flags = {"--namespace": "namespace", "--kind": "kind", "--name": "workload"}
    found: dict[str, Any] = {"containers": {}}
    for flag, value in itertools.pairwise(args):
        if flag in flags:
            found[flags[flag]] = value
        elif flag == "--container" and "=" in value:
            name, _, image = value.partition("=")
            found["containers"][name] = image
    return found


def _report_summary(task: Any, summary: Mapping[str, Any], facet: ConvoyRunFacet) -> ConvoyRunFacet:
    """The ``report`` task: every step's result of the run in one facet."""
    by_apply = {str(v): str(k) for k, v in dict(_op_kwargs(task).get("services") or {}).items()}
    for section in ("steps", "reverts"):
        rows = summary.get(section)
        for task_id, row in rows.items() if isinstance(rows, Mapping) else ():
            result = row.get("result") if isinstance(row, Mapping) else None
            for one in result if isinstance(result, list) else [result]:
                if isinstance(one, Mapping):
                    _add_result(facet, str(task_id), one, by_apply.get(str(task_id), ""))
    return facet


def _add_result(facet: ConvoyRunFacet, task_id: str, result: Mapping[str, Any], svc: str) -> None:
    if "datastore" in result:
        _merge(facet.datastores, str(result["datastore"]), _datastore_entry(result))
        return
    name = svc or str(result.get("service") or "")
    if not name and task_id.rsplit(".", 1)[-1].startswith("revert_"):
        name = task_id.rsplit(".", 1)[-1].removeprefix("revert_")
    if name:
        _merge(facet.services, name, _service_entry(result))


def build_facet(ti: Any, ti_state: Any) -> ConvoyRunFacet | None:
    """The ``convoy`` facet of one event of a convoy task; ``None`` for other tasks."""
    task = getattr(ti, "task", None)
    if task is None or not is_convoy_task(task):
        return None
    facet = ConvoyRunFacet(
        policy=str(ti.dag_id),
        digest=plan_digest(task),
        step=runtime.step_kind(str(ti.task_id)) or str(ti.task_id).rsplit(".", 1)[-1],
    )
    chosen = _pull(ti, config.PREFLIGHT, "return_value")
    if isinstance(chosen, Mapping) and "dry_run" in chosen:
        facet.dryRun = bool(chosen["dry_run"])
    svc = _service_of(task)
    step = _step_of(task)
    if svc and step is not None and not str(ti.task_id).startswith("rollback."):
        facet.services[svc] = {
            "workload": f"{step.get('namespace')}/{str(step.get('kind')).lower()}/"
            f"{step.get('workload')}",
            "target": _images(step.get("containers")),
        }
    if _state(ti_state) == "running":
        return facet
    result = task_result(ti)
    if result is None:
        return facet
    if str(ti.task_id) == config.REPORT:
        return _report_summary(task, result, facet)
    _add_result(facet, str(ti.task_id), result, svc)
    return facet


def convoy_run_facets(ti: Any, ti_state: Any) -> dict[str, RunFacet]:
    """``[openlineage] custom_run_facets`` entry point: ``{"convoy": ConvoyRunFacet}``."""
    try:
        facet = build_facet(ti, ti_state)
    except Exception:
        log.warning("convoy lineage: run facet left out", exc_info=True)
        return {}
    if facet is None:
        return {}
    # Lineage events leave the deployment (Marquez, DataHub...): same redaction as logs.
    facet.services = redact_data(facet.services)
    facet.datastores = redact_data(facet.datastores)
    return {FACET_KEY: facet}


# --------------------------------------------------------------------------- datasets


def dataset_for(asset: Any) -> Dataset | None:
    """An Airflow asset as an OpenLineage dataset: the provider's converters, plus ``k8s://``.

    ``k8s://<namespace>/<kind>/<name>`` becomes namespace ``k8s://<namespace>``
    and name ``<kind>/<name>``: the authority is the namespace, the path is
    the object, as the provider maps ``postgres://`` and ``s3://``.
    """
    uri = str(getattr(asset, "uri", "") or "")
    parts = urlsplit(uri)
    if parts.scheme == K8S_SCHEME:
        name = unquote(parts.path.lstrip("/"))
        return Dataset(namespace=f"{K8S_SCHEME}://{parts.netloc}", name=name) if name else None
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    converted = translate_airflow_asset(asset, None)
    return converted if isinstance(converted, Dataset) else None


def _task_outlets(task: Any) -> list[Any]:
    outlets = getattr(task, "outlets", None)
    if outlets is None:
        outlets = getattr(task, "partial_kwargs", {}).get("outlets")
    return list(outlets or [])


def _outlets_of(task: Any, task_ids: Iterable[str]) -> list[Any]:
    dag: Any = getattr(task, "dag", None)
    found: list[Any] = []
    for task_id in task_ids:
        try:
            found += _task_outlets(dag.get_task(task_id))
        except Exception:
            log.debug("convoy lineage: no task %s", task_id)
    return found


def _reverted_steps(task: Any) -> list[str]:
    """Task ids whose changes this revert task puts back."""
    kwargs = _op_kwargs(task)
    if "stage_task_ids" in kwargs:
        return [str(t) for t in kwargs.get("stage_task_ids") or ()]
    apply_id = kwargs.get("apply_task_id") or getattr(task, "apply_task_id", "")
    return [str(apply_id)] if apply_id else []


def _sql_tables(files: Sequence[FrozenMigration], versions: set[str], kind: str) -> set[str]:
    """``schema.table`` names the ``kind`` (V or U) files of ``versions`` touch or create."""
    from convoy.engines.postgres.sql import touched_tables

    names: set[str] = set()
    for f in files:
        if f.kind == kind and f.version_text in versions:
            touched, created = touched_tables(f.content)
            names |= {f"{t.schema or 'public'}.{t.name}" for t in touched | created}
    return names


def runtime_assets(task: Any, result: Mapping[str, Any], ti: Any) -> list[Any]:
    """Tables a finished migrate or data revert changed beyond the declared outlets.

    Read from the run's record (the migration files the run executed, as
    preflight froze them), never from the policy files as they are now.
    """
    name = _callable_name(task)
    if name not in ("migrate", "revert"):
        return []
    kwargs = _op_kwargs(task)
    from convoy.plan.record import record_from_json
    from convoy.plan.specs import PostgresSpec

    record = record_from_json(
        preflight_task.unseal(
            ti.xcom_pull(task_ids=config.PREFLIGHT, key=preflight_task.RECORD_KEY)
        )
    )
    frozen = record.datastore(str(kwargs["datastore"]))
    ds = frozen.spec
    if not isinstance(ds, PostgresSpec):
        return []
    tables: set[str] = set()
    if name == "migrate":
        entry = _datastore_entry(result)
        applied = set(entry.get("migrationsApplied") or ())
        if applied:
            tables |= _sql_tables(frozen.migrations, applied, "V")
    else:
        inner = result.get("result")
        inner = inner if isinstance(inner, Mapping) else {}
        undone = set(_strings(inner.get("undone")))
        if undone:
            tables |= _sql_tables(frozen.migrations, undone, "U")
        for key in ("restored_tables", "dropped_tables"):
            tables |= set(_strings(inner.get(key)))
    return [a for t in sorted(tables) if (a := assets._asset(assets.table_uri(ds, t)))]


def output_datasets(task: Any, ti: Any = None) -> list[Dataset]:
    """What the task changes (or changed, once ``ti`` finished): tables, collections, workloads."""
    found = _task_outlets(task) + _outlets_of(task, _reverted_steps(task))
    if ti is not None:
        result = task_result(ti)
        if result is not None:
            found += runtime_assets(task, result, ti)
    datasets: dict[tuple[str, str], Dataset] = {}
    for asset in found:
        ds = dataset_for(asset)
        if ds is not None:
            datasets.setdefault((ds.namespace, ds.name), ds)
    return list(datasets.values())


class ConvoyExtractor(PythonExtractor):
    """``[openlineage] extractors``: output datasets of convoy's tasks.

    Registered for ``PythonOperator`` (it replaces the provider's
    ``PythonExtractor``, which it extends: other tasks get exactly what they
    got before), convoy's ``ConvoyPythonOperator`` and ``VerifiedStepOperator``
    (``PythonOperator`` s) and its rollout/revert pod operators.
    """

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return [
            "PythonOperator",
            "ConvoyPythonOperator",
            "VerifiedStepOperator",
            "RolloutPodOperator",
            "RevertPodOperator",
        ]

    def _base(self) -> Any:
        if callable(_callable(self.operator)):
            return super()._execute_extraction()
        return OperatorLineage()

    def _lineage(self, ti: Any) -> Any:
        base = self._base()
        if not is_convoy_task(self.operator):
            return base
        try:
            outputs = output_datasets(self.operator, ti)
        except Exception:
            log.warning("convoy lineage: datasets left out", exc_info=True)
            return base
        if not outputs:
            return base
        return OperatorLineage(
            inputs=list(base.inputs),
            outputs=outputs,
            run_facets=dict(base.run_facets),
            job_facets=dict(base.job_facets),
        )

    def _execute_extraction(self) -> Any:
        return self._lineage(None)

    def extract_on_complete(self, task_instance: Any) -> Any:
        return self._lineage(task_instance)

    def extract_on_failure(self, task_instance: Any) -> Any:
        return self._lineage(task_instance)
