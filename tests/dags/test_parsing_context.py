"""A task's parse of the DAG file builds only its own DAG (Airflow's parsing context).

Counted, not timed: how many policy files are loaded and how many DAGs built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import registry

CONTEXT_ENV = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"
TASK_ENV = "_AIRFLOW_PARSING_CONTEXT_TASK_ID"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record every policy file loaded and every DAG built by the registry."""
    calls: dict[str, list[Any]] = {"loaded": [], "built": []}
    load, build = registry.load_policy, registry.build_dag

    def counting_load(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls["loaded"].append(Path(path).name)
        return load(path, *args, **kwargs)

    def counting_build(loaded: Any, *args: Any, **kwargs: Any) -> Any:
        dag = build(loaded, *args, **kwargs)
        calls["built"].append(dag.dag_id)
        return dag

    monkeypatch.setattr(registry, "load_policy", counting_load)
    monkeypatch.setattr(registry, "build_dag", counting_build)
    monkeypatch.delenv(CONTEXT_ENV, raising=False)
    monkeypatch.delenv(TASK_ENV, raising=False)
    return calls


def _many(write_policy: Callable[..., Path], count: int) -> Path:
    path = Path()
    for i in range(count):
        path = write_policy(f"p{i:03d}.yaml", policy_dict(f"policy-{i:03d}"))
    return path.parent


def test_task_parse_with_the_parsing_context_builds_exactly_one_dag(
    write_policy: Callable[..., Path],
    load_dagbag: Callable[..., Any],
    counted: dict[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = _many(write_policy, 30)
    bag = load_dagbag(folder, **{CONTEXT_ENV: "policy-017", TASK_ENV: "preflight"})
    assert not bag.import_errors
    assert sorted(bag.dag_ids) == ["policy-017"]
    assert counted["built"] == ["policy-017"]
    assert counted["loaded"] == ["p017.yaml"]
    own = bag.dags["policy-017"]

    # Without the context (the DAG processor), every policy is built, and the
    # task's DAG is the same as the one the processor registers.
    monkeypatch.delenv(CONTEXT_ENV)
    monkeypatch.delenv(TASK_ENV)
    counted["built"].clear()
    counted["loaded"].clear()
    full = load_dagbag(folder)
    assert len(full.dag_ids) == 30
    assert len(counted["built"]) == 30
    assert len(counted["loaded"]) == 30
    assert sorted(full.dags["policy-017"].task_dict) == sorted(own.task_dict)


def test_the_policy_file_need_not_be_named_after_the_dag(
    write_policy: Callable[..., Path], counted: dict[str, list[Any]]
) -> None:
    _many(write_policy, 5)
    folder = write_policy("zz-other-name.yaml", policy_dict("shop")).parent
    dags = registry.register_policies(folder, dag_id="shop")
    assert list(dags) == ["shop"]
    assert counted["loaded"] == ["zz-other-name.yaml"]


def test_a_name_spelled_with_escapes_is_still_found(
    write_policy: Callable[..., Path], counted: dict[str, list[Any]]
) -> None:
    _many(write_policy, 3)
    text = (Path(write_policy("esc.yaml", policy_dict("shop")))).read_text()
    folder = write_policy("esc.yaml", text.replace("name: shop", 'name: "sh\\x6Fp"', 1)).parent
    dags = registry.register_policies(folder, dag_id="shop")
    assert list(dags) == ["shop"]
    assert counted["loaded"] == ["esc.yaml"]


def test_duplicate_names_and_placeholders_resolve_as_in_a_full_parse(
    write_policy: Callable[..., Path], counted: dict[str, list[Any]]
) -> None:
    _many(write_policy, 3)
    write_policy("a-first.yaml", policy_dict("shop"))
    write_policy("b-second.yaml", policy_dict("shop"))
    folder = write_policy("c-broken.yaml", "metadata: [unclosed\n").parent
    full = registry.register_policies(folder, dag_id=None)
    for dag_id in ("shop", "convoy-invalid-b-second", "convoy-invalid-c-broken"):
        only = registry.register_policies(folder, dag_id=dag_id)
        assert list(only) == [dag_id]
        assert sorted(only[dag_id].task_dict) == sorted(full[dag_id].task_dict)
        assert only[dag_id].description == full[dag_id].description


def test_an_unknown_dag_id_falls_back_to_every_policy(
    write_policy: Callable[..., Path], counted: dict[str, list[Any]]
) -> None:
    folder = _many(write_policy, 4)
    dags = registry.register_policies(folder, dag_id="no-such-dag")
    assert len(dags) == 4
    assert len(counted["loaded"]) == 4
