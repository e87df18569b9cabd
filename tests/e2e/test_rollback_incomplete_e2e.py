"""A rollback that stays failed after every retry, end to end (local mode, emulated
cluster, ``dag.test()``): the run ends failed and the ``report`` task's ERROR log,
the written report and the ``onRollback`` webhook all name what is left behind,
in which state, and the command that finishes the revert by hand.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import images, load_dag, states
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"
CHECKOUT_NEW = "registry.example.com/checkout:2.4.0-crashloop"
CHECKOUT_OLD = f"registry.example.com/checkout:{PREVIOUS}"
HAND_COMMAND = (
    "python -m convoy.rollout revert --namespace shop --kind Deployment "
    f"--name checkoutservice --container server={CHECKOUT_OLD}"
)
LEFT_LINE = (
    f"checkout: Deployment/checkoutservice still at server={CHECKOUT_NEW} (revert failed), "
    f"should be back at server={CHECKOUT_OLD}; finish by hand: {HAND_COMMAND}"
)


def _small_policy(policy_dir: Callable[..., Any], alert_url: str) -> Any:
    """Two waves of the demo (cart, then the crash-looping checkout), quick to fail."""
    from convoy.policy import load_policy

    path = Path(policy_dir(crashloop=True).path)
    data = yaml.safe_load(path.read_text())
    data["services"] = [s for s in data["services"] if s["name"] in ("cart", "checkout")]
    for svc in data["services"]:
        svc["dependsOn"] = ["cart"] if svc["name"] == "checkout" else []
    data["rollout"]["progressDeadlineSeconds"] = 10
    data["alerts"] = {"onRollback": [alert_url]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path)


def test_revert_that_fails_on_every_try_is_left_for_a_human(
    cluster: Any,
    policy_dir: Callable[..., Any],
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CONVOY_REVERT_RETRY_DELAY_SECONDS", "0")
    loaded = _small_policy(policy_dir, webhook_receiver.url())
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    # The rollout's PATCH of checkout goes through; from then on the runner may no
    # longer patch that one Deployment (its permission revoked mid-run), so every
    # try of its revert meets a 403.
    cluster.forbid("patch", "deployments", "checkoutservice", after=1)

    with caplog.at_level(logging.ERROR, logger="convoy.airflow.report_task"):
        run = load_dag("shop-demo").test()
    got = states(run)
    assert run.state == "failed"
    assert got["wave_1.rollout_checkout"] == "failed"
    assert got["rollback.gate"] == "success"
    assert got["rollback.revert_checkout"] == "failed"
    assert got["rollback.revert_cart"] == "success"  # an older wave is still reverted
    assert got["report"] == "success"
    assert got["outcome"] == "failed"
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert tries["rollback.revert_checkout"] == 3  # the DAG's 2 retries, all spent
    denied = [r for r in cluster.requests if r.status == 403]
    assert len(denied) == 3
    assert all(r.verb == "PATCH" and r.path.endswith("/checkoutservice") for r in denied)

    after = images(cluster, loaded.policy)
    assert after["cart"] == seeded["cart"]
    assert after["checkout"] == {"server": CHECKOUT_NEW}

    # The report task's ERROR log. Task logs reach pytest's log handler when
    # logging was set up earlier in the session, else only Airflow's structlog
    # lines on stdout: look in both.
    head = f"ROLLBACK INCOMPLETE for shop-demo run {run.run_id}: "
    message = f"{head}these are left as they are and need a human:\n- {LEFT_LINE}"
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.name == "convoy.airflow.report_task"
    ]
    out = capfd.readouterr().out
    printed = re.search(r"\[error\s*\] " + re.escape(message), out)
    assert message in logged or printed, (logged, out[-3000:])

    # report.json and the Markdown report.
    (report_json,) = (tmp_path / "runs" / "shop-demo").glob("*/report.json")
    summary = json.loads(report_json.read_text())
    assert summary["leftBehind"] == [LEFT_LINE]
    assert summary["reverts"]["rollback.revert_checkout"]["state"] == "failed"
    (md,) = (tmp_path / "reports" / "shop-demo").glob("*/report.md")
    assert f"LEFT BEHIND: {LEFT_LINE}" in md.read_text()

    # The onRollback webhook.
    rollback_alerts = [b for b in webhook_receiver.bodies if b["event"] == "rollback"]
    assert len(rollback_alerts) == 1, webhook_receiver.bodies
    alert = rollback_alerts[0]
    assert alert["rollback_failed"] == ["rollback.revert_checkout"]
    assert alert["state_left_behind"] == [LEFT_LINE]
    assert HAND_COMMAND in alert["message"]

    # The command finishes the job once the permission is back.
    from convoy.rollout.cli import main

    cluster.allow("patch", "deployments", "checkoutservice")
    argv = shlex.split(HAND_COMMAND)[3:]
    assert main([*argv, "--kubeconfig", str(tmp_path / "kubeconfig")]) == 0
    assert images(cluster, loaded.policy) == seeded
