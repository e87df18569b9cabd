"""A stand-in for the task instance convoy's task functions receive (no Airflow run).

It serves XCom pulls from a dict, keeps every push in order and answers
``get_task_states`` for the run: the surface ``convoy.airflow.runtime`` and
``convoy.airflow.datastores`` use.
"""

from __future__ import annotations

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
        xcoms: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.states = dict(states or {})
        #: ``(task_ids, key)`` -> value; ``selection`` is the preflight result.
        self.xcoms = dict(xcoms or {})
        if selection is not None:
            self.xcoms[(config.PREFLIGHT, "return_value")] = selection
        self.pushed: list[tuple[str, Any]] = []

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, Any]:
        return {run_ids[0]: self.states}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))

    def keys(self) -> list[str]:
        """The keys pushed, in order."""
        return [k for k, _ in self.pushed]

    def progress(self) -> list[dict[str, Any]]:
        """Every ``progress`` value pushed, in order."""
        return [v for k, v in self.pushed if k == runtime.PROGRESS_KEY]
