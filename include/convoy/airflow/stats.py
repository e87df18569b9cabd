"""The metrics sink of :mod:`convoy.observe.metrics`: Airflow's ``Stats``.

Installed when ``convoy.airflow`` is imported, so every task (and the CLI, the
demo, ``airflow dags test``) sends convoy's metrics through the deployment's
``[metrics]`` settings (StatsD, DogStatsD, OpenTelemetry). Airflow's stats
module is imported on the first sample, not at install time: the triggerer
imports this package inside its event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convoy.observe import metrics


def airflow_stats() -> Any:
    """Airflow's stats module, initialised from ``[metrics]`` if nobody did yet.

    The task runner initialises it; ``airflow dags test``, the CLI and plain
    subprocesses do not, so without this the metrics would go to a no-op logger.
    """
    from airflow.sdk._shared.observability.metrics import stats as shared
    from airflow.sdk.observability import stats

    if getattr(shared, "_factory", None) is None:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics import stats_utils

        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=False),
        )
    return stats


class AirflowStatsSink:
    """:class:`convoy.observe.metrics.Sink` over Airflow's ``Stats`` (tags passed along)."""

    def incr(self, stat: str, count: int = 1, *, tags: Mapping[str, str]) -> None:
        airflow_stats().incr(stat, count=count, tags=dict(tags))

    def gauge(self, stat: str, value: float, *, tags: Mapping[str, str]) -> None:
        airflow_stats().gauge(stat, value, tags=dict(tags))

    def timing(self, stat: str, dt: float, *, tags: Mapping[str, str]) -> None:
        airflow_stats().timing(stat, dt, tags=dict(tags))


def install() -> None:
    """Make Airflow's ``Stats`` the metrics sink, unless another one is installed."""
    if metrics.current_sink() is None:
        metrics.use_sink(AirflowStatsSink())
