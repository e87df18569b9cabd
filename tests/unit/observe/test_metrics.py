"""The metric catalogue, the statsd_exporter mapping and the dashboard tell one story.

- every metric of ``metric_catalog()`` is matched by exactly one mapping rule,
  which produces the expected Prometheus name and labels (statsd_exporter glob
  semantics, for the subset the mapping uses: ``*`` is one whole name part);
- every Prometheus metric a dashboard panel queries is produced by a rule, and
  every rule's metric is queried by a panel;
- emitting goes through Airflow's ``Stats`` and never raises into the caller.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.observe import metrics
from convoy.observe.metrics import MetricSpec, metric_catalog

REPO = Path(__file__).resolve().parents[3]
MAPPING = yaml.safe_load((REPO / "deploy" / "statsd-mapping.yaml").read_text())["mappings"]
DASHBOARD = json.loads((REPO / "deploy" / "grafana" / "convoy.json").read_text())
PREFIX = "airflow"  # the Helm chart's [metrics] statsd_prefix

# ``template`` (an analysis template's name) is a policy name like the others: a
# DNS-1123 label, a handful per policy, the key operators filter analyses by.
SAMPLE = {
    "policy": "shop",
    "service": "checkout",
    "datastore": "orders",
    "transform": "backfill",
    "template": "error-rate",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --------------------------------------------------------------------------- statsd_exporter


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """statsd_exporter glob matching for whole-part ``*`` (the only form used here)."""
    parts = pattern.split(".")
    for part in parts:
        assert part == "*" or "*" not in part, f"partial-part glob not supported: {pattern}"
    body = r"\.".join("([^.]+)" if p == "*" else re.escape(p) for p in parts)
    return re.compile(rf"^{body}$")


def _expand(template: str, groups: tuple[str, ...]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda m: groups[int(m.group(1)) - 1], template)


def map_statsd(name: str) -> list[tuple[str, dict[str, str]]]:
    """Every (Prometheus name, labels) a mapping rule gives ``name`` (first wins in reality)."""
    out = []
    for rule in MAPPING:
        assert rule.get("match_type", "glob") == "glob"
        m = _glob_regex(rule["match"]).match(name)
        if m:
            labels = {k: _expand(str(v), m.groups()) for k, v in rule["labels"].items()}
            out.append((_expand(rule["name"], m.groups()), labels))
    return out


def _samples(spec: MetricSpec) -> list[tuple[str, ...]]:
    enums = dict(spec.enums)
    choices = [enums[label] if label in enums else (SAMPLE[label],) for label in spec.labels]
    return list(itertools.product(*choices))


# --------------------------------------------------------------------------- catalogue


def test_catalogue_names_are_unique_and_typed() -> None:
    specs = metric_catalog()
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.labels[0] == "policy", spec
        assert set(spec.labels) <= set(SAMPLE) | {label for label, _ in spec.enums}, spec
        assert re.fullmatch(r"convoy_[a-z_]+", spec.prometheus), spec
        if spec.type == "counter":
            assert spec.prometheus.endswith("_total"), spec
        if spec.type == "timer":
            assert spec.prometheus.endswith("_seconds"), spec


def test_catalogue_covers_the_issue() -> None:
    names = {s.name for s in metric_catalog()}
    assert {
        "rollout.services_rolled_out",
        "progress.services_total",
        "rollout.duration",
        "rollout.readiness_wait",
        "datastore.rows_transformed",
        "datastore.transform_rate",
        "datastore.migrations_applied",
        "validation.expectations",
        "rollback",
        "run.outcome",
    } <= names


@pytest.mark.parametrize("spec", metric_catalog(), ids=lambda s: s.name)
def test_every_metric_is_matched_by_exactly_one_rule(spec: MetricSpec) -> None:
    for values in _samples(spec):
        statsd_name = f"{PREFIX}.{spec.stat(*values)}"
        matches = map_statsd(statsd_name)
        assert len(matches) == 1, (statsd_name, matches)
        name, labels = matches[0]
        assert name == spec.prometheus
        assert labels == dict(zip(spec.labels, values, strict=True))


def test_timers_become_histograms_and_other_types_stay_plain() -> None:
    by_name = {rule["name"]: rule for rule in MAPPING}
    for spec in metric_catalog():
        rule = by_name[spec.prometheus]
        if spec.type == "timer":
            assert rule.get("observer_type") == "histogram", rule
            assert rule["histogram_options"]["buckets"] == sorted(
                rule["histogram_options"]["buckets"]
            )
        else:
            assert "observer_type" not in rule, rule


def test_every_rule_maps_a_catalogued_metric() -> None:
    produced = {s.prometheus for s in metric_catalog()}
    assert {rule["name"] for rule in MAPPING} == produced
    assert len(MAPPING) == len(produced), "one rule per metric keeps label sets consistent"


def test_label_values_cannot_add_name_levels() -> None:
    assert metrics.label_value("a.b c/d") == "a_b_c_d"
    assert metrics.label_value("") == "_"
    stat = metrics.SERVICES_ROLLED_OUT.stat("my.policy", "svc")
    assert stat == "convoy.rollout.services_rolled_out.my_policy.svc"
    with pytest.raises(ValueError, match="expected labels"):
        metrics.SERVICES_ROLLED_OUT.stat("only-policy")


# --------------------------------------------------------------------------- dashboard


def _dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    for var in DASHBOARD["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


def _queried_metrics() -> set[str]:
    histograms = {s.prometheus for s in metric_catalog() if s.type == "timer"}
    found: set[str] = set()
    for expr in _dashboard_queries():
        for name in re.findall(r"\b(convoy_[a-z_]+)", expr):
            for suffix in HISTOGRAM_SUFFIXES:
                base = name.removesuffix(suffix)
                if base != name and base in histograms:
                    name = base
                    break
            found.add(name)
    return found


def test_dashboard_is_a_grafana_dashboard() -> None:
    assert DASHBOARD["uid"]
    assert DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for word in ("progress", "rate", "eta", "fail", "rollback"):
        assert word in titles, word
    for panel in DASHBOARD["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'policy=~"$policy"' in target["expr"], target


def test_dashboard_queries_only_mapped_metrics() -> None:
    mapped = {rule["name"] for rule in MAPPING}
    histograms = {r["name"] for r in MAPPING if r.get("observer_type") == "histogram"}
    for expr in _dashboard_queries():
        for name in re.findall(r"\b(convoy_[a-z_]+)", expr):
            if name.endswith("_bucket"):
                assert name.removesuffix("_bucket") in histograms, name
    assert _queried_metrics() <= mapped, _queried_metrics() - mapped


def test_every_mapped_metric_is_on_the_dashboard() -> None:
    mapped = {rule["name"] for rule in MAPPING}
    assert mapped <= _queried_metrics(), mapped - _queried_metrics()


# --------------------------------------------------------------------------- emission


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, Any]]] = []

    def incr(self, stat: str, count: int = 1, **kw: Any) -> None:
        self.calls.append(("incr", stat, count, kw["tags"]))

    def gauge(self, stat: str, value: float, **kw: Any) -> None:
        self.calls.append(("gauge", stat, value, kw["tags"]))

    def timing(self, stat: str, dt: float, **kw: Any) -> None:
        self.calls.append(("timing", stat, dt, kw["tags"]))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: rec)
    return rec


def test_functions_emit_names_values_and_tags(recorder: _Recorder) -> None:
    metrics.service_rolled_out("shop", "checkout")
    metrics.rollout_duration("shop", "checkout", 12.5)
    metrics.services_total("shop", 7)
    metrics.rows_transformed("shop", "orders", "backfill", 500)
    metrics.rows_transformed("shop", "orders", "backfill", 0)  # nothing to count
    metrics.validation_expectations("shop", "orders", passed=3, failed=1)
    metrics.rollback("shop", "started")
    metrics.run_outcome("shop", "failed")
    assert recorder.calls == [
        (
            "incr",
            "convoy.rollout.services_rolled_out.shop.checkout",
            1,
            {"policy": "shop", "service": "checkout"},
        ),
        (
            "timing",
            "convoy.rollout.duration.shop.checkout",
            12500.0,
            {"policy": "shop", "service": "checkout"},
        ),
        ("gauge", "convoy.progress.services_total.shop", 7.0, {"policy": "shop"}),
        (
            "incr",
            "convoy.datastore.rows_transformed.shop.orders.backfill",
            500,
            {"policy": "shop", "datastore": "orders", "transform": "backfill"},
        ),
        (
            "incr",
            "convoy.validation.expectations.shop.orders.passed",
            3,
            {"policy": "shop", "datastore": "orders", "result": "passed"},
        ),
        (
            "incr",
            "convoy.validation.expectations.shop.orders.failed",
            1,
            {"policy": "shop", "datastore": "orders", "result": "failed"},
        ),
        ("incr", "convoy.rollback.shop.started", 1, {"policy": "shop", "phase": "started"}),
        ("incr", "convoy.run.outcome.shop.failed", 1, {"policy": "shop", "outcome": "failed"}),
    ]


def test_emitting_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise OSError("statsd host unreachable")

    monkeypatch.setattr(metrics, "_stats", broken)
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        metrics.service_rolled_out("shop", "checkout")
        metrics.run_outcome("shop", "exploded")  # type: ignore[arg-type]
    assert "could not emit metric" in caplog.text


def test_unbounded_enum_values_are_refused(recorder: _Recorder) -> None:
    metrics.run_outcome("shop", "manual__2026-01-01T00:00:00")  # type: ignore[arg-type]
    metrics.rollback("shop", "unknown")  # type: ignore[arg-type]
    assert recorder.calls == []


def test_importing_metrics_does_not_import_airflow() -> None:
    code = (
        "import sys, convoy.observe.metrics as m; m.metric_catalog(); "
        "bad = sorted(n for n in sys.modules if n == 'airflow' or n.startswith('airflow.')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
