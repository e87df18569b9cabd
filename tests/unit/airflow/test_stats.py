"""The Airflow layer installs the metrics sink of the Airflow-free convoy.observe.metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import convoy.airflow  # noqa: F401  (installs the sink)
from convoy.airflow import stats
from convoy.observe import metrics


def test_importing_convoy_airflow_installs_airflow_stats() -> None:
    assert isinstance(metrics.current_sink(), stats.AirflowStatsSink)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def incr(self, stat: str, count: int = 1, *, tags: Mapping[str, str]) -> None:
        self.calls.append(("incr", stat, count, dict(tags)))

    def gauge(self, stat: str, value: float, *, tags: Mapping[str, str]) -> None:
        self.calls.append(("gauge", stat, value, dict(tags)))

    def timing(self, stat: str, dt: float, *, tags: Mapping[str, str]) -> None:
        self.calls.append(("timing", stat, dt, dict(tags)))


def test_the_sink_forwards_to_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _Recorder()
    monkeypatch.setattr(stats, "airflow_stats", lambda: rec)
    metrics.service_rolled_out("shop", "cart")
    metrics.run_duration("shop", 2.0)
    assert rec.calls == [
        (
            "incr",
            "convoy.rollout.services_rolled_out.shop.cart",
            1,
            {"policy": "shop", "service": "cart"},
        ),
        ("timing", "convoy.run.duration.shop", 2000.0, {"policy": "shop"}),
    ]


def test_install_keeps_a_sink_installed_before() -> None:
    other: Any = _Recorder()
    previous = metrics.use_sink(other)
    try:
        stats.install()
        assert metrics.current_sink() is other
    finally:
        metrics.use_sink(previous)


def test_without_a_sink_samples_are_dropped() -> None:
    previous = metrics.use_sink(None)
    try:
        assert metrics.current_sink() is None
        metrics.service_rolled_out("shop", "cart")  # no error, nothing sent
    finally:
        metrics.use_sink(previous)
    assert isinstance(metrics.current_sink(), stats.AirflowStatsSink)
