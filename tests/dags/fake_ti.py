"""Stand-ins for the task instance convoy's task functions receive and the KPO's pod manager.

It serves XCom pulls from a dict, keeps every push in order and answers
``get_task_states`` for the run: the surface ``convoy.airflow.runtime`` and
``convoy.airflow.datastores`` use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convoy.airflow import config, runtime
from convoy.airflow import preflight as preflight_task


class FakeTI:
    dag_id = "shop"

    def __init__(
        self,
        task_id: str = "task",
        *,
        selection: dict[str, Any] | None = None,
        states: dict[str, str | None] | None = None,
        xcoms: Mapping[tuple[str, str] | str, Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.states = dict(states or {})
        #: ``(task_ids, key)`` -> value; ``selection`` is the preflight result.
        self.xcoms: dict[tuple[str, str], Any] = {}
        for where, value in (xcoms or {}).items():
            self.set_xcom(where, value)
        if selection is not None:
            self.set_xcom((config.PREFLIGHT, "return_value"), selection)
        self.pushed: list[tuple[str, Any]] = []

    def set_xcom(self, where: tuple[str, str] | str, value: Any) -> None:
        """Store a value to pull; ``where`` is ``(task_id, key)`` or ``"task_id:key"``."""
        if isinstance(where, str):
            task, _, key = where.rpartition(":")
            where = (task, key)
        self.xcoms[where] = value

    def freeze(
        self,
        policy: Any,
        *,
        services: list[str] | None = None,
        mode: str = "upgrade",
        dry_run: bool = False,
        rollback_run_id: str | None = None,
    ) -> dict[str, Any]:
        """Store preflight's run record of ``policy`` (a path or LoadedPolicy) and its selection.

        What :func:`convoy.airflow.preflight_task.preflight` would push for these params;
        returns the selection (also stored as preflight's return value).
        """
        from convoy.plan import build_plan
        from convoy.plan.record import freeze
        from convoy.policy import load_policy

        loaded = load_policy(policy) if isinstance(policy, str | Path) else policy
        whole = build_plan(loaded)
        plan = build_plan(loaded, services=services) if mode == "upgrade" else whole
        record = freeze(
            loaded,
            plan,
            dag_plan_digest=whole.digest,
            mode="rollback" if mode == "rollback" else "upgrade",
            dry_run=dry_run,
            rollback_run_id=rollback_run_id,
        )
        chosen: dict[str, Any] = {
            "digest": whole.digest,
            "mode": mode,
            "dry_run": dry_run,
            "services": list(record.selected_services),
            "datastores": list(record.selected_datastores),
            "record": record.digest,
        }
        if mode == "rollback":
            chosen["rollback_run_id"] = rollback_run_id
        self.set_xcom((config.PREFLIGHT, preflight_task.RECORD_KEY), record.to_dict())
        self.set_xcom((config.PREFLIGHT, "return_value"), chosen)
        return chosen

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, Any]:
        return {run_ids[0]: self.states}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))
        self.xcoms[(self.task_id, key)] = value

    def keys(self) -> list[str]:
        """The keys pushed, in order."""
        return [k for k, _ in self.pushed]

    def progress(self) -> list[dict[str, Any]]:
        """Every ``progress`` value pushed, in order."""
        return [v for k, v in self.pushed if k == runtime.PROGRESS_KEY]


class FakePodManager:
    """The KPO's pod manager reading the sidecar's ``return.json`` (no cluster involved)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.text = json.dumps(payload)

    def extract_xcom(self, pod: Any, *, ignore_kill_failure: bool = True) -> str:
        return self.text
