"""The "left behind" lines of a rollback that did not finish, and where they go."""

from __future__ import annotations

import json
import shlex
from typing import Any

from convoy.airflow import leftover, notifiers, report_task

CART = leftover.ImageLeftover(
    service="cart",
    namespace="shop",
    kind="Deployment",
    workload="cartservice",
    current={"server": "registry.example.com/cart:2.4.0"},
    previous={"server": "registry.example.com/cart:2.3.0"},
)


def test_image_line_names_state_and_the_command() -> None:
    line = leftover.image_line(CART)
    assert line.startswith(
        "cart: Deployment/cartservice still at server=registry.example.com/cart:2.4.0 "
        "(revert failed), should be back at server=registry.example.com/cart:2.3.0"
    )
    command = line.split("finish by hand: ", 1)[1]
    assert shlex.split(command) == [
        "python", "-m", "convoy.rollout", "revert", "--namespace", "shop",
        "--kind", "Deployment", "--name", "cartservice",
        "--container", "server=registry.example.com/cart:2.3.0",
    ]  # fmt: skip


def test_image_line_without_known_images_uses_the_annotation() -> None:
    item = leftover.ImageLeftover("redis", "shop", "StatefulSet", "redis-cart")
    line = leftover.image_line(item)
    assert "StatefulSet/redis-cart in an unknown state (revert failed)" in line
    assert "--container" not in line
    assert line.endswith("--kind StatefulSet --name redis-cart")


def test_manual_rollback_command_keeps_the_run_check() -> None:
    item = leftover.ImageLeftover(
        "redis", "shop", "StatefulSet", "redis-cart", only_if_run_id="manual__2026-01-01"
    )
    command = shlex.split(leftover.image_line(item).split("finish by hand: ", 1)[1])
    assert command[-2:] == ["--only-if-run-id", "manual__2026-01-01"]
    assert "--container" not in command


def test_data_line_is_a_manual_rollback_trigger() -> None:
    line = leftover.data_line(
        "shop-demo", "manual__2026-01-01T00:00", leftover.DataLeftover("orders")
    )
    assert line.startswith("orders: data changes of run manual__2026-01-01T00:00 are still")
    command = shlex.split(line.split("finish by hand: ", 1)[1])
    assert command[:4] == ["airflow", "dags", "trigger", "shop-demo"]
    assert command[4] == "-c"
    assert json.loads(command[5]) == {
        "mode": "rollback",
        "rollback_run_id": "manual__2026-01-01T00:00",
    }


def test_message_lists_data_before_images() -> None:
    found = leftover.Leftovers(
        "shop", "r1", images=(CART,), data=(leftover.DataLeftover("orders"),)
    )
    message = leftover.left_behind_message(found)
    head, first, second = message.splitlines()
    assert head.startswith("ROLLBACK INCOMPLETE for shop run r1")
    assert first.startswith("- orders:")
    assert second.startswith("- cart:")
    assert leftover.left_behind_message(leftover.Leftovers("shop", "r1")) == ""


def test_alert_names_what_is_left() -> None:
    line = leftover.image_line(CART)
    ctx: dict[str, Any] = {
        "run_id": "r1",
        "convoy_task_states": {"wave_0.rollout_cart": "failed", "rollback.revert_cart": "failed"},
        "convoy_left_behind": [line],
    }
    subject, body = notifiers.alert_message(ctx, policy="shop", event="rollback")
    assert "rollback failed too" in subject
    assert f"Left for a human: {line}" in body


def test_report_lists_what_failed_reverts_left(monkeypatch: Any, caplog: Any) -> None:

    class TI:
        dag_id = "shop"

        def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
            if task_ids == "wave_0.rollout_cart" and key == "result":
                return {"changed": True, "previousImages": {"server": "cart:2.3.0"}}
            return None

    monkeypatch.setattr(report_task, "_current_images", lambda *a: {"server": "cart:2.4.0"})
    summary = {
        "reverts": {
            "rollback.revert_data_orders": {"state": "failed"},
            "rollback.revert_cart": {"state": "failed"},
            "rollback.revert_redis": {"state": "success"},
        }
    }
    step = {"namespace": "shop", "kind": "Deployment", "workload": "cartservice"}
    targets = {
        "cart": {**step, "service": "cart", "containers": {"server": "cart:2.4.0"}},
        "redis": {**step, "service": "redis", "workload": "redis", "containers": {}},
    }
    with caplog.at_level("ERROR", logger="convoy.airflow.report_task"):
        lines = report_task._left_behind(
            {"ti": TI(), "run_id": "r1"},
            summary,
            {"cart": "wave_0.rollout_cart", "redis": "wave_0.rollout_redis"},
            targets,
            "kubernetes_default",
            False,
        )
    assert len(lines) == 2
    assert lines[0].startswith("orders: data changes of run r1")
    assert lines[1].startswith(
        "cart: Deployment/cartservice still at server=cart:2.4.0 (revert failed)"
    )
    assert lines[1].endswith("--container server=cart:2.3.0")
    assert "ROLLBACK INCOMPLETE for shop run r1" in caplog.text
