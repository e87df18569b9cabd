"""The DAG file: one DAG per policy; broken policies never hide the good ones."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.policy import discover_policies, load_policy

REPO = Path(__file__).resolve().parents[2]


def test_every_policy_in_the_repo_loads(load_dagbag: Callable[..., Any]) -> None:
    bag = load_dagbag()
    assert bag.import_errors == {}
    expected = {
        load_policy(p).policy.metadata.name for p in discover_policies(REPO / "dags/policies")
    }
    assert expected
    assert set(bag.dag_ids) == expected
    assert "shop-demo" in bag.dag_ids


def test_policies_dir_env_override(
    load_dagbag: Callable[..., Any], write_policy: Callable[..., Path]
) -> None:
    path = write_policy("a.yaml", policy_dict("alpha"))
    bag = load_dagbag(path.parent)
    assert bag.dag_ids == ["alpha"]


BAD_FIELD = policy_dict("bad-field")
BAD_FIELD["rollout"] = {"maxParallel": 0}


@pytest.mark.parametrize(
    ("file", "content", "dag_id", "needle"),
    [
        ("bad-field.yaml", BAD_FIELD, "bad-field", "maxParallel"),
        ("broken.yaml", "apiVersion: convoy/v1\nkind: [unclosed\n", "convoy-invalid-broken", ""),
        ("dup.yaml", policy_dict("alpha"), "convoy-invalid-dup", "already the DAG of"),
    ],
)
def test_bad_policy_gets_a_failing_placeholder_and_good_ones_load(
    load_dagbag: Callable[..., Any],
    write_policy: Callable[..., Path],
    file: str,
    content: Any,
    dag_id: str,
    needle: str,
) -> None:
    good = write_policy("alpha.yaml", policy_dict("alpha"))
    write_policy("zeta.yaml", policy_dict("zeta"))
    bad = write_policy(file, content)
    bag = load_dagbag(good.parent)

    # No import error: one would mark every DAG of the shared file as broken.
    assert bag.import_errors == {}
    assert {"alpha", "zeta", dag_id} == set(bag.dag_ids)
    for name in ("alpha", "zeta"):
        assert "rollback.gate" in bag.dags[name].task_ids

    placeholder = bag.dags[dag_id]
    assert placeholder.task_ids == ["policy_error"]
    assert placeholder.is_paused_upon_creation is True
    assert "convoy-invalid" in placeholder.tags
    message = placeholder.task_dict["policy_error"].op_kwargs["message"]
    assert message.startswith(f"{bad}:")  # file:line:col: field: message
    assert needle in message
    assert message in placeholder.doc_md
    warned = "\n".join(w for ws in bag.captured_warnings.values() for w in ws)
    assert str(bad) in warned


def test_bad_policy_error_names_line_and_field(
    load_dagbag: Callable[..., Any], write_policy: Callable[..., Path]
) -> None:
    bad = write_policy("bad-field.yaml", BAD_FIELD)
    bag = load_dagbag(bad.parent)
    message = bag.dags["bad-field"].task_dict["policy_error"].op_kwargs["message"]
    location, _, rest = message.partition(": ")
    file, line, column = location.rsplit(":", 2)
    assert file == str(bad)
    assert int(line) >= 1
    assert int(column) >= 1
    assert rest


def test_placeholder_task_fails_with_the_diagnostics() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from convoy.airflow import placeholder_dag

    dag = placeholder_dag("x", Path("p.yaml"), "p.yaml:3:5: rollout.maxParallel: too small")
    task = dag.task_dict["policy_error"]
    with pytest.raises(AirflowFailException, match="maxParallel: too small"):
        task.python_callable(**task.op_kwargs)


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_every_dag_serializes(
    load_dagbag: Callable[..., Any], write_policy: Callable[..., Path], mode: str
) -> None:
    # The dag processor turns a serialization failure into an import error of the
    # whole (shared) DAG file, so every DAG, placeholders included, must serialize.
    from airflow.serialization.serialized_objects import DagSerialization

    good = write_policy("alpha.yaml", policy_dict("alpha"))
    write_policy("bad.yaml", BAD_FIELD)
    bag = load_dagbag(good.parent, CONVOY_EXECUTION_MODE=mode)
    assert set(bag.dag_ids) == {"alpha", "bad-field"}
    for dag in bag.dags.values():
        data = DagSerialization.to_dict(dag)
        assert data["dag"]["dag_id"] == dag.dag_id


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_alias_bomb_and_fifo_get_placeholders_and_do_not_stall_the_others(
    load_dagbag: Callable[..., Any], write_policy: Callable[..., Path]
) -> None:
    # The DAG processor loads every policy within its import timeout: one hostile
    # file must neither block it (FIFO) nor exhaust it (alias bomb).
    lines = ["apiVersion: convoy/v1", "kind: UpgradePolicy", "metadata: {name: bomb}"]
    lines.append("l0: &l0 [" + ", ".join(["lol"] * 8) + "]")
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 8) + "]" for i in range(1, 10)]
    bomb = write_policy("b-bomb.yaml", "\n".join(lines) + "\n")
    os.mkfifo(bomb.parent / "c-fifo.yaml")
    write_policy("a-alpha.yaml", policy_dict("alpha"))
    write_policy("z-zeta.yaml", policy_dict("zeta"))
    started = time.monotonic()
    bag = load_dagbag(bomb.parent)
    assert time.monotonic() - started < 30
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"alpha", "zeta", "convoy-invalid-b-bomb", "convoy-invalid-c-fifo"}
    bomb_message = bag.dags["convoy-invalid-b-bomb"].task_dict["policy_error"].op_kwargs["message"]
    assert bomb_message.startswith(f"{bomb}:8:10: l4[0]: YAML aliases expand to more than")
    fifo_message = bag.dags["convoy-invalid-c-fifo"].task_dict["policy_error"].op_kwargs["message"]
    assert "is a FIFO (named pipe), not a regular file" in fifo_message
