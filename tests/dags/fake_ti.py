"""Stand-ins for the task instance convoy's task functions receive and the KPO's pod manager.

It serves XCom pulls from a dict, keeps every push in order and answers
``get_task_states`` for the run: the surface ``convoy.airflow.runtime`` and
``convoy.airflow.datastores`` use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from convoy.airflow import config, runtime


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
