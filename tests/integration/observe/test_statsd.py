"""convoy's metrics reach a real UDP StatsD listener through Airflow's own StatsD client.

The emitting side runs in a subprocess configured only through Airflow's
``[metrics]`` environment variables, as a task process would be; the names
that arrive are then run through the statsd_exporter mapping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from statsd_listener import Sample, StatsdListener, mapped_names

pytestmark = pytest.mark.integration

EMIT = textwrap.dedent(
    """
    import convoy.airflow  # installs the Airflow Stats sink, as in every task
    from convoy.observe import metrics as m

    m.services_total("shop", 2)
    m.services_done("shop", 0)
    m.service_rolled_out("shop", "checkout")
    m.rollout_duration("shop", "checkout", 12.5)
    m.readiness_wait("shop", "checkout", 3.0)
    m.services_done("shop", 1)
    m.run_eta("shop", 42)
    m.rows_transformed("shop", "orders", "backfill", 1000)
    m.transform_rate("shop", "orders", "backfill", 250.0)
    m.transform_rows_expected("shop", "orders", "backfill", 4000)
    m.migrations_applied("shop", "orders", 2)
    m.validation_expectations("shop", "orders", passed=5, failed=1)
    m.step_failed("shop", "rollout")
    m.rollback("shop", "started")
    m.rollback("shop", "succeeded")
    m.run_outcome("shop", "rolled_back")
    m.run_duration("shop", 90)
    """
)

EXPECTED = [
    Sample("airflow.convoy.progress.services_total.shop", 2, "g"),
    Sample("airflow.convoy.progress.services_done.shop", 0, "g"),
    Sample("airflow.convoy.rollout.services_rolled_out.shop.checkout", 1, "c"),
    Sample("airflow.convoy.rollout.duration.shop.checkout", 12500, "ms"),
    Sample("airflow.convoy.rollout.readiness_wait.shop.checkout", 3000, "ms"),
    Sample("airflow.convoy.progress.services_done.shop", 1, "g"),
    Sample("airflow.convoy.progress.eta_seconds.shop", 42, "g"),
    Sample("airflow.convoy.datastore.rows_transformed.shop.orders.backfill", 1000, "c"),
    Sample("airflow.convoy.datastore.transform_rate.shop.orders.backfill", 250, "g"),
    Sample("airflow.convoy.datastore.transform_rows_expected.shop.orders.backfill", 4000, "g"),
    Sample("airflow.convoy.datastore.migrations_applied.shop.orders", 2, "c"),
    Sample("airflow.convoy.validation.expectations.shop.orders.passed", 5, "c"),
    Sample("airflow.convoy.validation.expectations.shop.orders.failed", 1, "c"),
    Sample("airflow.convoy.step.failed.shop.rollout", 1, "c"),
    Sample("airflow.convoy.rollback.shop.started", 1, "c"),
    Sample("airflow.convoy.rollback.shop.succeeded", 1, "c"),
    Sample("airflow.convoy.run.outcome.shop.rolled_back", 1, "c"),
    Sample("airflow.convoy.run.duration.shop", 90000, "ms"),
]


def _run(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )


def test_every_metric_arrives_over_udp(statsd: StatsdListener, tmp_path: Path) -> None:
    proc = _run(EMIT, statsd.statsd_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = statsd.wait_for({s.name for s in EXPECTED})
    # Airflow's own metrics (serde...) share the channel; convoy's come in call order.
    assert [s for s in got if s.name.startswith("airflow.convoy.")] == EXPECTED
    for sample in EXPECTED:  # and the statsd_exporter turns each into exactly one metric
        assert len(mapped_names(sample.name)) == 1, sample


def test_a_dead_statsd_host_does_not_fail_the_caller(tmp_path: Path) -> None:
    env = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "no-such-host.invalid",
        "AIRFLOW__METRICS__STATSD_PORT": "9",
    }
    proc = _run(EMIT + "\nprint('still here')\n", env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "still here" in proc.stdout


def test_without_the_airflow_layer_nothing_is_sent(statsd: StatsdListener, tmp_path: Path) -> None:
    """convoy.observe has no sink of its own: a process that never imports convoy.airflow
    (a plain script, the rollout pod) drops the samples and never imports Airflow."""
    code = EMIT.replace("import convoy.airflow", "pass") + (
        "\nimport sys\nassert 'airflow' not in sys.modules, 'airflow imported'\n"
    )
    proc = _run(code, statsd.statsd_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert statsd.wait_for({"never"}, timeout=0.5) == []


def test_without_statsd_nothing_is_sent(statsd: StatsdListener, tmp_path: Path) -> None:
    env = {**statsd.statsd_env(), "AIRFLOW__METRICS__STATSD_ON": "False"}
    proc = _run(EMIT, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert statsd.wait_for({"never"}, timeout=0.5) == []
