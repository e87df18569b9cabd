"""``CheapSetattr`` operators end up exactly as Airflow's own ``BaseOperator`` s would."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, BaseOperator, TaskGroup

from convoy.airflow.cheap_setattr import CheapSetattr


class Airflows(BaseOperator):
    template_fields: Sequence[str] = ("arguments",)
    arguments: Any = None


class Cheap(CheapSetattr):
    template_fields: Sequence[str] = ("arguments",)
    arguments: Any = None


KWARGS: dict[str, Any] = {
    "retries": 3,
    "retry_delay": 30,  # converted to a timedelta
    "max_retry_delay": 600.0,
    "retry_exponential_backoff": True,
    "pool": "rollouts",
    "trigger_rule": "none_failed",
    "priority_weight": 1000,
    "weight_rule": "absolute",
    "outlets": [Asset(uri="k8s://ns/deployment/cart")],
}

#: Attributes holding the DAG, its groups or per-instance objects: compared by what they hold.
IDENTITY = {"_dag", "task_group", "params", "_log_config_logger_name", "start_trigger_args"}


def _build(cls: type[BaseOperator]) -> tuple[BaseOperator, BaseOperator]:
    with (
        DAG(
            "d",
            schedule=None,
            start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            default_args={"owner": "platform", "retries": 1},
        ),
        TaskGroup("wave_0"),
    ):
        first = cls(task_id="first")
        second = cls(task_id="second", **KWARGS)
    return first, second


def _state(op: BaseOperator) -> dict[str, Any]:
    state = {k: v for k, v in vars(op).items() if k not in IDENTITY}
    init_kwargs = state.pop("_BaseOperator__init_kwargs")
    state["init_kwargs"] = {k: v for k, v in init_kwargs.items() if k not in {"dag", "task_group"}}
    state["init_kwargs_dag"] = init_kwargs["dag"] is op.dag
    state["init_kwargs_group"] = init_kwargs["task_group"] is op.task_group
    return state


def test_built_operators_have_the_state_airflow_gives_them() -> None:
    for airflows, cheap in zip(_build(Airflows), _build(Cheap), strict=True):
        assert _state(cheap) == _state(airflows)
        assert cheap.retry_delay == airflows.retry_delay
        assert cheap.dag.task_dict[cheap.task_id] is cheap
        assert cheap.task_group.group_id == "wave_0"
        assert cheap.task_id == airflows.task_id


@pytest.mark.parametrize("cls", [Airflows, Cheap])
def test_assignments_after_construction_behave_as_airflows(cls: type[BaseOperator]) -> None:
    first, second = _build(cls)
    second.retries = "5"  # type: ignore[assignment]  # converted
    assert second.retries == 5
    second.retry_delay = 7  # type: ignore[assignment]
    assert second.retry_delay == dt.timedelta(seconds=7)
    # An init argument assigned later is what a mapped re-creation would use.
    second.pool = "other"
    assert second._BaseOperator__init_kwargs["pool"] == "other"  # type: ignore[attr-defined]
    # An XComArg assigned to a template field makes its task an upstream.
    second.arguments = first.output
    assert first.task_id in second.upstream_task_ids
    # While a task executes, assignments are plain.
    third = cls(task_id="third", dag=first.dag)
    third._lock_for_execution = True
    third.arguments = first.output
    assert first.task_id not in third.upstream_task_ids


def test_converters_are_known_per_class() -> None:
    assert {"_dag", "retries", "retry_delay", "max_retry_delay"} <= Cheap._convoy_converted


def test_convoys_python_operator_is_airflows_with_the_same_state() -> None:
    from airflow.providers.standard.operators.python import PythonOperator

    from convoy.airflow.cheap_setattr import ConvoyPythonOperator

    built = []
    for cls in (PythonOperator, ConvoyPythonOperator):
        with DAG("p", schedule=None, default_args={"retries": 2}):
            built.append(cls(task_id="t", python_callable=print, op_kwargs={"a": [1]}, **KWARGS))
    airflows, convoys = built
    assert isinstance(convoys, PythonOperator)
    assert _state(convoys) == _state(airflows)
