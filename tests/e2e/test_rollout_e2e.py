"""Policies run end to end through Airflow (local execution) against the emulated cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import AIRFLOW, images, load_dag, states

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"


def expected_targets(policy: Any) -> dict[str, dict[str, str]]:
    return {s.name: dict(s.containers) for s in policy.services}


def test_happy_path_updates_every_service(cluster: Any, policy_dir: Callable[..., Any]) -> None:
    loaded = policy_dir(crashloop=False)
    cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("shop-demo").test()
    assert run.state == "success"
    assert images(cluster, loaded.policy) == expected_targets(loaded.policy)
    got = states(run)
    assert got["rollback.gate"] == "skipped"
    assert {got[t] for t in got if t.startswith("rollback.revert_")} == {"skipped"}
    assert got["outcome"] == "success"


def test_failure_in_last_wave_rolls_everything_back(
    cluster: Any,
    policy_dir: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    loaded = policy_dir(crashloop=True)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("shop-demo").test()
    got = states(run)
    assert run.state == "failed"
    assert got["wave_2.rollout_checkout"] == "failed"
    assert got["rollback.gate"] == "success"
    assert all(got[t] == "success" for t in got if t.startswith("rollback.revert_"))
    assert got["report"] == "success"
    assert got["outcome"] == "failed"
    # Waves 0-1 were rolled out and the failed wave 2 was partly applied: all back exactly.
    assert images(cluster, loaded.policy) == seeded
    # The run report names the failed service and what was reverted.
    (md,) = (tmp_path / "reports" / "shop-demo").glob("*/report.md")
    text = md.read_text()
    assert "**Final state: FAILED - rolled back**" in text
    checkout = next(line for line in text.splitlines() if line.startswith("| `checkout` |"))
    assert "| failed |" in checkout
    assert "| yes |" in checkout
    assert "image checkout:" in text
    assert "reverted" in text.lower()
    assert (md.parent / "report.html").is_file()


def test_service_subset_runs_only_it_and_its_dependencies(
    cluster: Any, policy_dir: Callable[..., Any]
) -> None:
    loaded = policy_dir(crashloop=True)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("shop-demo").test(run_conf={"services": ["cart"]})
    assert run.state == "success"
    after = images(cluster, loaded.policy)
    targets = expected_targets(loaded.policy)
    assert after["cart"] == targets["cart"]
    assert after["redis"] == targets["redis"]  # dependency of cart
    for name in ("currency", "log-agent", "payment", "catalog", "checkout"):
        assert after[name] == seeded[name]
    got = states(run)
    assert got["wave_2.rollout_checkout"] == "skipped"
    assert got["wave_1.rollout_cart"] == "success"


def test_dry_run_via_airflow_cli_changes_nothing(
    cluster: Any, policy_dir: Callable[..., Any], run_env: dict[str, str]
) -> None:
    loaded = policy_dir(crashloop=True)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "shop-demo", "-c", '{"dry_run": true}'],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert images(cluster, loaded.policy) == seeded
    assert not [r for r in cluster.requests if r.verb == "PATCH" and "dryRun" not in r.query]
