"""Policy models of verified rollouts: analysis templates and canary steps.

The vocabulary is Argo Rollouts' AnalysisTemplate and Flagger's metric
templates: a named query against a provider, measured ``count`` times every
``interval``; each measurement is *successful* when its value lies in
``thresholdRange`` (both ends inclusive), *failed* when it does not, and
*inconclusive* when the query returned no number (``onNoData``). The analysis
fails as soon as more than ``failureLimit`` measurements failed, is
inconclusive when more than ``inconclusiveLimit`` were inconclusive, and
succeeds otherwise. No expression language: a declarative range only.

Whole-policy rules (names, references, PromQL syntax, canary on a DaemonSet)
live in :mod:`convoy.policy.analysis_checks`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

#: ``500ms``, ``10s``, ``5m``, ``1h``.
DURATION_PATTERN = r"^[0-9]{1,6}(ms|s|m|h)$"
_DURATION = re.compile(DURATION_PATTERN)
#: In the JSON Schema only; the loader checks durations itself for a readable message.
_DURATION_SCHEMA: dict[str, Any] = {"pattern": DURATION_PATTERN}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

NoDataVerdict = Literal["inconclusive", "fail", "pass"]
Number = StrictInt | StrictFloat


def seconds(duration: str) -> float:
    """``"90s"`` -> 90.0; the value already matched :data:`DURATION_PATTERN`."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a duration: {duration!r}")
    unit = match.group(1)
    return int(duration[: -len(unit)]) * _UNITS[unit]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class ThresholdRange(_Model):
    """A measurement passes when ``min <= value <= max`` (an omitted end is open)."""

    min: Number | None = None
    max: Number | None = None


class SecretRef(_Model):
    """The Kubernetes Secret a rollout pod reads a provider from (``execution: kubernetes``).

    Keys (Flagger's): ``address`` (the base URL, e.g. ``http://prometheus.monitoring:9090``),
    and ``token`` (bearer) or ``username`` + ``password`` (basic auth), both optional.
    """

    name: StrictStr = Field(
        description="Secret in the policy namespace (DNS-1123 subdomain); keys address, "
        "token, username, password."
    )


#: Keys of a provider's Secret; only ``address`` must be there.
SECRET_KEYS = ("address", "token", "username", "password")


class PrometheusProvider(_Model):
    conn_id: StrictStr = Field(
        "prometheus_default",
        description="Airflow connection of the Prometheus server (host, port, schema; "
        "password = bearer token, or login + password = basic auth).",
    )
    secret_ref: SecretRef | None = Field(
        None,
        description="execution: kubernetes: the Secret the rollout pod reads this provider "
        "from (required there).",
    )


class HttpProvider(_Model):
    conn_id: StrictStr = Field(
        description="Airflow connection of the service to call (host, port, schema, "
        "credentials as for prometheus)."
    )
    path: StrictStr = Field("/", description="Path to GET; may use the query variables.")
    secret_ref: SecretRef | None = Field(
        None,
        description="execution: kubernetes: the Secret the rollout pod reads this provider "
        "from (required there).",
    )


class Provider(_Model):
    """Exactly one of ``prometheus`` (a PromQL query) or ``http`` (2xx passes)."""

    prometheus: PrometheusProvider | None = None
    http: HttpProvider | None = None


class AnalysisTemplate(_Model):
    name: StrictStr = Field(description="DNS-1123 label; referenced by services and steps.")
    provider: Provider
    query: StrictStr | None = Field(
        None,
        description="PromQL returning one number (prometheus). Variables: {{ service }}, "
        "{{ namespace }}, {{ workload }}, {{ kind }}, {{ image }}, {{ images }}, "
        "{{ revision }}.",
    )
    threshold_range: ThresholdRange | None = Field(
        None, description="Success when min <= value <= max (prometheus; required)."
    )
    interval: StrictStr = Field(
        "10s", json_schema_extra=_DURATION_SCHEMA, description="Time between measurements."
    )
    count: StrictInt = Field(3, ge=1, le=1000, description="Measurements to take.")
    initial_delay: StrictStr = Field(
        "0s", json_schema_extra=_DURATION_SCHEMA, description="Wait before the first measurement."
    )
    failure_limit: StrictInt = Field(
        0, ge=0, le=1000, description="Failed measurements tolerated; one more fails it."
    )
    inconclusive_limit: StrictInt = Field(
        0, ge=0, le=1000, description="Inconclusive measurements tolerated."
    )
    on_no_data: NoDataVerdict = Field(
        "inconclusive", description="Verdict of a measurement whose query returned no number."
    )


class CanaryStep(_Model):
    """Exactly one of ``pods``, ``pause`` or ``analysis``."""

    pods: StrictInt | None = Field(
        None, ge=1, le=10_000, description="Update this many pods in all, then hold."
    )
    pause: StrictStr | None = Field(
        None, json_schema_extra=_DURATION_SCHEMA, description="Wait this long."
    )
    analysis: StrictStr | None = Field(None, description="Run this analysis template now.")


class Canary(_Model):
    """Steps of a canary rollout (Deployment: pause/resume; StatefulSet: partition)."""

    steps: tuple[CanaryStep, ...] = Field(min_length=1)


# --------------------------------------------------------------------------- query variables

#: The variables a query (or an http path) may use, and what they stand for.
QUERY_VARIABLES = {
    "service": "the service's name",
    "namespace": "the Kubernetes namespace",
    "workload": "the workload's name",
    "kind": "Deployment, StatefulSet or DaemonSet",
    "image": "the new image (of the first container, by name)",
    "images": "a regular expression matching exactly the new images",
    "revision": "the canary's revision (pod-template-hash or controller revision)",
}
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_REGEX_SPECIAL = re.compile(r"([.+*?()|\[\]{}^$\\])")


def unknown_variables(text: str) -> list[str]:
    """Names used as ``{{ name }}`` in ``text`` that are not query variables."""
    return sorted({m.group(1) for m in _VARIABLE.finditer(text)} - set(QUERY_VARIABLES))


def _string_literal(value: str) -> str:
    """``value`` safe inside a PromQL double-quoted (Go) string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def query_values(
    *,
    service: str,
    namespace: str,
    workload: str,
    kind: str,
    images: dict[str, str],
    revision: str = "",
) -> dict[str, str]:
    """Raw (unescaped) values of the query variables of one service."""
    ordered = [images[c] for c in sorted(images)]
    alternation = "|".join(_REGEX_SPECIAL.sub(r"\\\1", i) for i in sorted(set(ordered)))
    return {
        "service": service,
        "namespace": namespace,
        "workload": workload,
        "kind": kind,
        "image": ordered[0] if ordered else "",
        "images": alternation,
        "revision": revision,
    }


def render_query(text: str, values: dict[str, str], *, promql: bool = True) -> str:
    """Substitute ``{{ name }}``; for PromQL every value is escaped as a string literal body.

    Values are meant to sit inside quotes (``workload="{{ workload }}"``); the
    escaping keeps a value from ending the string it sits in.
    """

    def sub(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        return _string_literal(value) if promql else value

    return _VARIABLE.sub(sub, text)


#: Values used to check a query at load time (the real ones are known at run time).
SAMPLE_VALUES = query_values(
    service="service",
    namespace="namespace",
    workload="workload",
    kind="Deployment",
    images={"app": "registry.example.com/app:1.0.0"},
    revision="5d8f7c9b4",
)


def promql_error(query: str) -> str | None:
    """The PromQL parser's complaint about ``query`` (variables filled in), or ``None``."""
    import promql_parser

    try:
        expr = promql_parser.parse(render_query(query, SAMPLE_VALUES))
    except ValueError as exc:
        return str(exc) or "invalid PromQL"
    except Exception as exc:  # the parser's own errors are ValueError; be safe
        return f"{type(exc).__name__}: {exc}"
    while type(expr).__name__ == "ParenExpr":
        expr = expr.expr  # type: ignore[attr-defined]
    kind = type(expr).__name__
    if kind in ("MatrixSelector", "SubqueryExpr"):
        return "the query returns a range vector; an analysis needs one number (wrap it in rate())"
    if kind == "StringLiteral":
        return "the query returns a string; an analysis needs one number"
    return None
