"""Task callables with a fake task instance (no Airflow run needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import gates, local_rollout
from convoy.airflow import preflight as preflight_task
from convoy.plan import build_plan
from convoy.policy import load_policy


@pytest.fixture
def policy_file(write_policy: Callable[..., Path]) -> Path:
    return write_policy("shop.yaml", policy_dict("shop"))


def test_preflight_resolves_selection(policy_file: Path) -> None:
    digest = build_plan(load_policy(policy_file)).digest
    ti = FakeTI("preflight")
    out = preflight_task.preflight(
        policy_path=str(policy_file),
        digest=digest,
        params={"dry_run": True, "services": ["cart"], "mode": "upgrade"},
        ti=ti,
    )
    record = out.pop("record")
    assert out == {
        "digest": digest,
        "mode": "upgrade",
        "dry_run": True,
        "services": ["cart", "redis"],
        "datastores": [],
    }
    ti.set_xcom("preflight:return_value", {**out, "record": record})
    frozen = preflight_task.run_record({"ti": ti})
    assert frozen.digest == record
    assert frozen.plan.services == ("cart", "redis")
    assert frozen.dag_plan_digest == digest
    assert frozen.policy_sha256 == load_policy(policy_file).source_sha256


def test_run_record_refuses_an_altered_or_missing_record(policy_file: Path) -> None:
    ti = FakeTI("x")
    ti.freeze(policy_file)
    stored = ti.xcom_pull(task_ids="preflight", key=preflight_task.RECORD_KEY)
    stored["plan"]["waves"][0]["steps"][0]["containers"][0][1] = "evil:1"
    with pytest.raises(AirflowFailException, match="altered"):
        preflight_task.run_record({"ti": ti})
    ti.set_xcom("preflight:run_record", None)
    with pytest.raises(AirflowFailException, match="missing"):
        preflight_task.run_record({"ti": ti})


def test_preflight_refuses_a_changed_policy(policy_file: Path) -> None:
    digest = build_plan(load_policy(policy_file)).digest
    data = yaml.safe_load(policy_file.read_text())
    data["rollout"]["maxParallel"] = 1
    policy_file.write_text(yaml.safe_dump(data))
    with pytest.raises(AirflowFailException, match="changed since this DAG was built"):
        preflight_task.preflight(policy_path=str(policy_file), digest=digest, params={})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"mode": "rollback"}, "needs rollback_run_id"),
        ({"mode": "rollback", "rollback_run_id": "  "}, "needs rollback_run_id"),
        ({"mode": "sideways"}, "expected 'upgrade' or 'rollback'"),
        ({"services": ["nope"]}, "'nope'"),
    ],
)
def test_preflight_rejects_bad_params(
    policy_file: Path, params: dict[str, Any], match: str
) -> None:
    digest = build_plan(load_policy(policy_file)).digest
    with pytest.raises(AirflowFailException, match=match):
        preflight_task.preflight(
            policy_path=str(policy_file), digest=digest, params=params, ti=FakeTI("preflight")
        )


WATCHED = ["wave_0.rollout_a", "wave_1.rollout_b"]


@pytest.mark.parametrize(
    ("states", "opens"),
    [
        ({"wave_0.rollout_a": "success", "wave_1.rollout_b": "success"}, False),
        ({"wave_0.rollout_a": "skipped", "wave_1.rollout_b": "skipped"}, False),
        ({"wave_0.rollout_a": "upstream_failed", "wave_1.rollout_b": "upstream_failed"}, False),
        ({"wave_0.rollout_a": "success", "wave_1.rollout_b": "failed"}, True),
    ],
)
def test_rollback_gate(states: dict[str, str], opens: bool) -> None:
    ctx = {"ti": FakeTI("outcome", states=states), "run_id": "r"}
    if opens:
        assert gates.rollback_gate(watched=WATCHED, **ctx) == ["wave_1.rollout_b"]
    else:
        with pytest.raises(AirflowSkipException):
            gates.rollback_gate(watched=WATCHED, **ctx)


@pytest.mark.parametrize(
    ("states", "fails"),
    [
        ({"preflight": "success", "report": "success", "rollback.gate": "skipped"}, False),
        ({"preflight": "success", "wave_0.rollout_a": "failed", "report": "success"}, True),
        ({"preflight": "failed", "wave_0.rollout_a": "upstream_failed"}, True),
    ],
)
def test_outcome(states: dict[str, str], fails: bool) -> None:
    ctx = {"ti": FakeTI("outcome", states={**states, "outcome": "running"}), "run_id": "r"}
    if fails:
        with pytest.raises(AirflowFailException, match="run failed"):
            gates.outcome(**ctx)
    else:
        assert gates.outcome(**ctx) == "success"


@pytest.mark.parametrize(
    ("xcoms", "expected"),
    [
        ({}, None),  # never ran
        ({"a:result": {"changed": False, "previousImages": {"s": "old"}}}, None),
        ({"a:result": {"changed": True, "dryRun": True, "previousImages": {"s": "old"}}}, None),
        ({"a:result": {"changed": True, "previousImages": {"s": "old"}}}, {"s": "old"}),
        ({"a:before": {"s": "old", "other": "x"}}, {"s": "old"}),  # failed part-way
    ],
)
def test_images_to_restore(xcoms: dict[str, Any], expected: dict[str, str] | None) -> None:
    ctx = {"ti": FakeTI("outcome", xcoms=xcoms)}
    assert local_rollout.images_to_restore(ctx, "a", {"s": "new"}) == expected


def test_revert_is_noop_without_gate_or_in_dry_run() -> None:
    step = {"service": "a", "namespace": "n", "kind": "Deployment", "workload": "a",
            "containers": {"s": "new"}}  # fmt: skip
    kwargs = {"step": step, "apply_task_id": "a", "conn_id": "c", "in_cluster": False,
              "deadline_seconds": 10}  # fmt: skip
    closed = FakeTI(
        "outcome", xcoms={"a:result": {"changed": True, "previousImages": {"s": "old"}}}
    )
    assert local_rollout.revert_local(**kwargs, ti=closed)["reason"] == "rollback not requested"
    dry = FakeTI(
        "outcome",
        xcoms={
            "rollback.gate:return_value": ["a"],
            "preflight:return_value": {"dry_run": True},
        },
    )
    assert local_rollout.revert_local(**kwargs, ti=dry)["reason"] == "rollback not requested"


def test_preflight_manual_rollback_skips_every_forward_step(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "local")
    digest = build_plan(load_policy(policy_file)).digest
    out = preflight_task.preflight(
        policy_path=str(policy_file),
        digest=digest,
        params={"mode": "rollback", "rollback_run_id": "manual__1", "services": ["cart"]},
        ti=FakeTI("preflight"),
    )
    assert out["mode"] == "rollback"
    assert out["rollback_run_id"] == "manual__1"
    assert out["services"] == []
    assert out["datastores"] == []


def test_preflight_manual_rollback_in_kubernetes_mode(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    digest = build_plan(load_policy(policy_file)).digest
    out = preflight_task.preflight(
        policy_path=str(policy_file),
        digest=digest,
        params={"mode": "rollback", "rollback_run_id": "r1"},
        ti=FakeTI("preflight"),
    )
    assert (out["mode"], out["rollback_run_id"], out["services"]) == ("rollback", "r1", [])


def test_gate_opens_for_a_manual_rollback_whatever_the_states() -> None:
    chosen = {"mode": "rollback", "rollback_run_id": "r1", "dry_run": False}
    ti = FakeTI(
        "outcome",
        states={"wave_0.rollout_a": "skipped"},
        xcoms={"preflight:return_value": chosen},
    )
    ctx = {"ti": ti, "run_id": "r2"}
    assert gates.rollback_gate(watched=["wave_0.rollout_a"], **ctx) == ["manual rollback of r1"]
    assert preflight_task.manual_rollback_of(ctx) == "r1"
    ti.set_xcom("rollback.gate:return_value", ["manual rollback of r1"])
    assert gates.rollback_open(ctx) == ["manual rollback of r1"]


def test_revert_retry_delay_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from convoy.airflow import config

    monkeypatch.delenv("CONVOY_REVERT_RETRY_DELAY_SECONDS", raising=False)
    assert config.revert_retry_kwargs() == {}
    monkeypatch.setenv("CONVOY_REVERT_RETRY_DELAY_SECONDS", "0")
    assert config.revert_retry_kwargs() == {
        "retry_delay": dt.timedelta(0),
        "retry_exponential_backoff": False,
    }


def test_the_run_record_is_stored_encrypted_with_the_fernet_key(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.crypto import get_fernet
    from cryptography.fernet import Fernet

    secret = "Tk-where-literal-do-not-store"
    orders = {
        "name": "orders", "type": "postgres", "connId": "orders_db", "after": [],
        "transforms": [{"name": "t", "table": "public.orders", "key": "id",
                        "where": f"note <> '{secret}'", "set": {"status": "'open'"}}],
    }  # fmt: skip
    path = write_policy("sealed.yaml", policy_dict("sealed", datastores=[orders]))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()
    try:
        ti = FakeTI("preflight")
        chosen = preflight_task.preflight(
            policy_path=str(path), digest=build_plan(load_policy(path)).digest, ti=ti
        )
        stored = ti.xcom_pull(task_ids="preflight", key=preflight_task.RECORD_KEY)
        assert set(stored) == {"digest", "sealed"}
        assert secret not in str(stored)
        ti.set_xcom("preflight:return_value", chosen)
        frozen = preflight_task.run_record({"ti": ti})
        assert frozen.datastore("orders").spec.transforms[0].where == f"note <> '{secret}'"
    finally:
        get_fernet.cache_clear()


def test_without_a_fernet_key_the_record_keeps_no_alert_token(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.crypto import get_fernet

    token = "Tk-hook-path-do-not-store"
    alerts = {"onRollback": [f"https://hooks.slack.com/services/{token}", "smtp_default"]}
    path = write_policy("plain.yaml", policy_dict("plain", alerts=alerts))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    get_fernet.cache_clear()
    try:
        ti = FakeTI("preflight")
        chosen = preflight_task.preflight(
            policy_path=str(path), digest=build_plan(load_policy(path)).digest, ti=ti
        )
        assert token not in str(ti.xcom_pull(task_ids="preflight", key=preflight_task.RECORD_KEY))
        ti.set_xcom("preflight:return_value", chosen)
        frozen = preflight_task.run_record({"ti": ti})
        assert frozen.alerts["on_rollback"] == (
            "https://hooks.slack.com/services/***",
            "smtp_default",
        )
    finally:
        get_fernet.cache_clear()
