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

A task process parses the DAG file too, to find its task. Airflow then sets the
parsing context (:func:`airflow.sdk.get_parsing_context`) to the task's DAG,
and only the policy file(s) that can define that ``dag_id`` are loaded and
built, so a task's start-up does not grow with the number of policies.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, get_parsing_context
from airflow.sdk.exceptions import AirflowFailException

from convoy.airflow import config, drift
from convoy.airflow.collector import collector_paused
from convoy.airflow.dag_builder import build_dag
from convoy.policy import PolicyError, declared_name, discover_policies, load_policy
from convoy.policy.cache import ParseCache
from convoy.policy.files import POLICY_MAX_BYTES, FileRefused, read_regular
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


_FALLBACK_PREFIX = "convoy-invalid-"


def _fallback_id(path: Path) -> str:
    return _FALLBACK_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:150]


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


def _may_define(path: Path, dag_id: str) -> bool:
    """Whether the file at ``path`` declares ``metadata.name: <dag_id>`` (cheap, conservative).

    The name is only parsed when the file's bytes hold ``dag_id`` or an escape
    (a double-quoted YAML string may spell the name with escapes).
    """
    try:
        raw = read_regular(path, POLICY_MAX_BYTES, "policy file")
    except FileRefused:
        return False
    if dag_id.encode() not in raw and b"\\" not in raw:
        return False
    return _declared_name(path) == dag_id


def policy_files(directory: str | Path, dag_id: str | None = None) -> list[Path]:
    """The policy files of ``directory`` to load; with ``dag_id``, only those that can define it.

    Registering the returned files yields the same DAG ``dag_id`` as registering
    them all: the files that declare the name keep their order (the first
    valid or invalid one owns it), the others cannot take it. A placeholder's
    fallback id depends on the other files (a duplicate name falls back), so
    for those, and when no file declares ``dag_id``, every file is returned.
    """
    paths = discover_policies(directory)
    if dag_id is None or dag_id.startswith(_FALLBACK_PREFIX):
        return paths
    wanted = [p for p in paths if _may_define(p, drift.policy_name(dag_id) or dag_id)]
    return wanted or paths


def register_policies(directory: str | Path, *, dag_id: str | None = None) -> dict[str, DAG]:
    """One DAG per policy in ``directory`` (sorted by file name), keyed by ``dag_id``.

    ``dag_id`` (default: the parsing context's, set when a task process parses
    the DAG file) restricts the work to the files that can define that DAG.
    """
    if dag_id is None:
        dag_id = get_parsing_context().dag_id
    paths = policy_files(directory, dag_id)
    cache = _open_cache(directory)
    with collector_paused():
        dags = _register(paths, cache)
        _keep_out_of_collections(dags)
    if cache is not None:
        log.info(
            "convoy: parse cache %s: %d policy files unchanged, %d parsed",
            cache.directory,
            cache.hits,
            cache.misses,
        )
        if dag_id is None:
            # Every file was listed: entries of deleted or renamed policies can go.
            cache.prune((str(p), p) for p in paths)
    if dag_id is not None and dag_id in dags and len(dags) > 1:
        return {dag_id: dags[dag_id]}
    return dags


#: Tasks built above which the build leaves the collector's generations (about 80 policies
#: of 10 services); a task process, which builds one DAG, and small folders stay below.
FREEZE_MIN_TASKS = 2000


def _keep_out_of_collections(dags: Mapping[str, DAG]) -> None:
    """After a big build, move every object alive to the collector's permanent generation.

    Everything the build made was allocated while the collector was paused, so
    it all sits in the youngest generation: the first collections after the
    pause (the DagBag's own work sets them off) walked the millions of objects
    of a thousand DAGs up to three times, 1-1.5 s of such a parse, to find
    nothing. ``gc.freeze()`` keeps them out of every later collection. The cost:
    an object alive now that becomes cyclic garbage later is never collected,
    which in the processes that parse a folder this big (the DAG processor's,
    one per parse) is the DAGs themselves, alive until the process ends.
    """
    if sum(len(dag.task_dict) for dag in dags.values()) >= FREEZE_MIN_TASKS:
        gc.freeze()


_cache_warned: set[str] = set()


def _open_cache(directory: str | Path) -> ParseCache | None:
    """The parse cache of ``directory`` (``CONVOY_PARSE_CACHE_DIR``), if it can be used."""
    root = config.parse_cache_root()
    if root is None:
        return None
    cache, problem = ParseCache.open(root, directory)
    if cache is None and problem not in _cache_warned:
        _cache_warned.add(problem)
        log.warning(
            "convoy: policies are parsed without the parse cache (%s=%s): %s",
            config.PARSE_CACHE_ENV,
            root,
            problem,
        )
    return cache


def _register(paths: list[Path], cache: ParseCache | None = None) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        try:
            loaded = load_policy(path, cache=cache)
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
        if loaded.policy.drift_check is not None:
            check = drift.build_drift_dag(loaded)
            dags[check.dag_id] = check
            origin[check.dag_id] = path
    return dags


class DuplicatePolicyName(Exception):
    """Two policy files declare the same ``metadata.name`` (= ``dag_id``)."""


def _message(exc: Exception, path: Path) -> str:
    if isinstance(exc, PolicyError | DuplicatePolicyName):
        return str(exc)
    # Anything else (plan errors, builder bugs): still located at the file.
    return f"{path}:1:1: {type(exc).__name__}: {exc}"
