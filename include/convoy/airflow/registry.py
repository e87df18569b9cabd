"""Discover policy files and register one DAG per policy; bad policies never hide good ones.

Airflow keys import errors by DAG *file*, and an import error on the shared
``dags/convoy_policies.py`` marks every DAG of that file as having import
errors (they become stale and cannot be triggered). So a broken policy must not
raise out of the DAG file. Instead it gets a small, paused placeholder DAG
(``dag_id`` = its ``metadata.name`` if readable, else ``convoy-invalid-<file stem>``)
whose ``doc_md`` shows the diagnostics (``file:line:col: field: message``) and
whose only task, ``policy_error``, fails with them. The error is also logged
and emitted as a Python warning (the DagBag's ``captured_warnings``); all of
them carry the message redacted (:mod:`convoy.redaction`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from convoy.airflow import config
from convoy.airflow.dag_builder import build_dag
from convoy.policy import PolicyError, declared_name, discover_policies, load_policy
from convoy.redaction import get_logger, redact

log = get_logger(__name__)

INVALID_TAG = "convoy-invalid"
_DAG_ID_OK = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class PolicyWarning(UserWarning):
    """A policy file could not be turned into a DAG (see the placeholder DAG)."""


def policies_dir(default: str | Path) -> Path:
    """``CONVOY_POLICIES_DIR`` if set, else ``default``."""
    return Path(os.environ.get(config.POLICIES_DIR_ENV) or default)


def _declared_name(path: Path) -> str | None:
    name = declared_name(path)
    return name if name is not None and _DAG_ID_OK.match(name) else None


def _fallback_id(path: Path) -> str:
    return "convoy-invalid-" + re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:150]


def _fail(*, message: str) -> None:
    raise AirflowFailException(message)


def placeholder_dag(dag_id: str, path: Path, message: str) -> DAG:
    """A paused DAG that shows ``message`` and whose only task fails with it."""
    message = redact(message)
    with DAG(
        dag_id=dag_id,
        description=f"INVALID policy {path.name}: see the DAG docs",
        doc_md=(
            f"# Invalid policy `{path.name}`\n\nconvoy could not build this DAG. "
            f"Fix the policy file; the DAG is rebuilt on the next parse.\n\n"
            f"```text\n{message}\n```\n"
        ),
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        is_paused_upon_creation=True,
        max_active_runs=1,
        tags=["convoy", INVALID_TAG],
    ) as dag:
        PythonOperator(
            task_id="policy_error",
            python_callable=_fail,
            op_kwargs={"message": message},
            retries=0,
        )
    return dag


def _report(path: Path, message: str) -> None:
    message = redact(message)
    log.error("convoy: invalid policy %s:\n%s", path, message)
    warnings.warn(f"invalid policy {path}:\n{message}", PolicyWarning, stacklevel=3)


def register_policies(directory: str | Path) -> dict[str, DAG]:
    """One DAG per policy in ``directory`` (sorted by file name), keyed by ``dag_id``."""
    dags: dict[str, DAG] = {}
    origin: dict[str, Path] = {}
    for path in discover_policies(directory):
        try:
            loaded = load_policy(path)
            name = loaded.policy.metadata.name
            if name in dags:
                raise DuplicatePolicyName(
                    f"{path}:1:1: metadata.name: {name!r} is already the DAG of "
                    f"{origin[name]}; policy names must be unique"
                )
            dag = build_dag(loaded)
        except Exception as exc:
            message = _message(exc, path)
            dag_id = _declared_name(path)
            if dag_id is None or dag_id in dags:
                dag_id = _fallback_id(path)
            _report(path, message)
            dags[dag_id] = placeholder_dag(dag_id, path, message)
            origin[dag_id] = path
            continue
        dags[dag.dag_id] = dag
        origin[dag.dag_id] = path
    return dags


class DuplicatePolicyName(Exception):
    """Two policy files declare the same ``metadata.name`` (= ``dag_id``)."""


def _message(exc: Exception, path: Path) -> str:
    if isinstance(exc, PolicyError | DuplicatePolicyName):
        return str(exc)
    # Anything else (plan errors, builder bugs): still located at the file.
    return f"{path}:1:1: {type(exc).__name__}: {exc}"
