"""Whole-policy checks of analysis templates, their references and canary steps.

Run on the raw YAML data like :mod:`convoy.policy.checks`, so every problem is
reported in one pass with its position.
"""

from __future__ import annotations

from typing import Any

from convoy.policy import names
from convoy.policy.analysis import QUERY_VARIABLES, promql_error, seconds, unknown_variables
from convoy.policy.datastore_checks import check_conn_id
from convoy.policy.rawdata import mapping, mappings, strings
from convoy.policy.reporter import Reporter
from convoy.policy.source import FieldPath

PROVIDERS = ("prometheus", "http")
STEP_KEYS = ("pods", "pause", "analysis")
CANARY_KINDS = ("Deployment", "StatefulSet")


def check_analysis(reporter: Reporter, data: dict[str, Any]) -> None:
    """Templates (names, provider, query, range) and every reference to them."""
    known = _check_templates(reporter, data.get("analysisTemplates"))
    _check_secrets(reporter, data)
    rollout = mapping(data.get("rollout"))
    for key in ("analysis", "waveAnalysis"):
        _references(reporter, ("rollout", key), rollout.get(key), known)
    for path, svc in mappings(("services",), data.get("services")):
        _references(reporter, (*path, "analysis"), svc.get("analysis"), known)
        _check_canary(reporter, path, svc, known)


def _check_templates(reporter: Reporter, templates: Any) -> set[str]:
    known: dict[str, FieldPath] = {}
    for path, tpl in mappings(("analysisTemplates",), templates):
        name = tpl.get("name")
        if isinstance(name, str):
            message = names.dns_label(name, "analysis template name")
            if message:
                reporter.error((*path, "name"), message)
            elif name in known:
                first = reporter.doc.value_mark(known[name]).line
                reporter.error(
                    (*path, "name"), f"duplicate analysis template '{name}' (first at line {first})"
                )
            else:
                known[name] = (*path, "name")
        _check_template(reporter, path, tpl)
        for key in ("interval", "initialDelay"):
            _duration(reporter, (*path, key), tpl.get(key))
    return set(known)


def _check_template(reporter: Reporter, path: FieldPath, tpl: dict[str, Any]) -> None:
    provider = tpl.get("provider")
    if not isinstance(provider, dict):
        return
    chosen = [k for k in PROVIDERS if k in provider]
    if len(chosen) != 1:
        reporter.error(
            (*path, "provider"),
            "a provider has exactly one of prometheus, http"
            + (f" (got {', '.join(chosen)})" if chosen else ""),
        )
    for key in chosen:
        check_conn_id(
            reporter, (*path, "provider", key, "connId"), mapping(provider[key]).get("connId")
        )
    query, bounds = tpl.get("query"), tpl.get("thresholdRange")
    if "prometheus" in chosen:
        if query is None:
            reporter.at(
                reporter.doc.anchor(path), path, "missing field 'query': a prometheus analysis "
                "needs a PromQL query that returns one number"
            )  # fmt: skip
        if bounds is None:
            reporter.at(
                reporter.doc.anchor(path), path, "missing field 'thresholdRange': say which values "
                "pass, e.g. thresholdRange: {max: 0.01}"
            )  # fmt: skip
    elif "http" in chosen:
        for key in ("query", "thresholdRange"):
            if key in tpl:
                reporter.error(
                    (*path, key), f"{key} is for prometheus; an http check passes on 2xx"
                )
        _variables(
            reporter, (*path, "provider", "http", "path"), mapping(provider["http"]).get("path")
        )
    if isinstance(query, str) and _variables(reporter, (*path, "query"), query):
        problem = promql_error(query)
        if problem is not None:
            reporter.error((*path, "query"), f"invalid PromQL: {problem}")
    if isinstance(bounds, dict):
        low, high = bounds.get("min"), bounds.get("max")
        numbers = [v for v in (low, high) if isinstance(v, int | float) and not isinstance(v, bool)]
        if "min" not in bounds and "max" not in bounds:
            reporter.error((*path, "thresholdRange"), "give min, max or both")
        elif len(numbers) == 2 and low > high:  # type: ignore[operator]
            reporter.error((*path, "thresholdRange"), f"min {low} is above max {high}")


def _check_secrets(reporter: Reporter, data: dict[str, Any]) -> None:
    """``secretRef`` of every provider: a valid name, required in rollout pods, one per connection.

    In rollout pods (``execution: kubernetes``, the default) there is no Airflow
    connection: the pod reads the provider's address and credentials from the
    Secret, through ``secretKeyRef`` env (docs/rollout.md, "Execution modes").
    The pod keys providers by connection id, so one connection has one Secret.
    """
    execution = data.get("execution", "kubernetes")
    in_pods = execution == "kubernetes" or not isinstance(execution, str)
    seen: dict[tuple[str, str], tuple[str, FieldPath]] = {}
    for path, tpl in mappings(("analysisTemplates",), data.get("analysisTemplates")):
        provider = mapping(tpl.get("provider"))
        for key in PROVIDERS:
            if not isinstance(provider.get(key), dict):
                continue
            spec = provider[key]
            ref = spec.get("secretRef")
            ref_path = (*path, "provider", key, "secretRef")
            if ref is None:
                if in_pods:
                    reporter.error(
                        (*path, "provider", key),
                        "execution: kubernetes: the rollout pod reads this provider from a "
                        "Kubernetes Secret; add secretRef: {name: <secret>} (keys address, "
                        "token or username and password), or set execution: local",
                        at_key=True,
                    )
                continue
            name = mapping(ref).get("name")
            if not isinstance(name, str):
                continue
            message = names.dns_subdomain(name, "secret name")
            if message:
                reporter.error((*ref_path, "name"), message)
                continue
            conn = spec.get("connId", "prometheus_default" if key == "prometheus" else None)
            if not isinstance(conn, str):
                continue
            first = seen.setdefault((key, conn), (name, ref_path))
            if first[0] != name:
                line = reporter.doc.value_mark(first[1]).line
                reporter.error(
                    (*ref_path, "name"),
                    f"{key} connection '{conn}' is read from Secret '{first[0]}' (line {line}); "
                    "the rollout pod has one Secret per connection",
                )


def _variables(reporter: Reporter, path: FieldPath, text: Any) -> bool:
    """Report unknown ``{{ name }}`` variables; ``True`` when there are none."""
    if not isinstance(text, str):
        return True
    unknown = unknown_variables(text)
    for name in unknown:
        reporter.error(
            path,
            f"unknown variable '{{{{ {name} }}}}'{names.suggest(name, QUERY_VARIABLES)}; "
            f"known: {', '.join(QUERY_VARIABLES)}",
        )
    return not unknown


def _references(reporter: Reporter, path: FieldPath, value: Any, known: set[str]) -> None:
    seen: set[str] = set()
    for ref_path, name in strings(path, value):
        if name not in known:
            hint = names.suggest(name, known) or (
                "" if known else "; define it under analysisTemplates"
            )
            reporter.error(ref_path, f"unknown analysis template '{name}'{hint}")
        elif name in seen:
            reporter.error(ref_path, f"analysis template '{name}' is listed twice")
        seen.add(name)


def _check_canary(
    reporter: Reporter, path: FieldPath, svc: dict[str, Any], known: set[str]
) -> None:
    canary = svc.get("canary")
    if not isinstance(canary, dict):
        return
    kind = mapping(svc.get("workload")).get("kind")
    if isinstance(kind, str) and kind not in CANARY_KINDS:
        reporter.error(
            (*path, "canary"),
            f"a {kind} cannot be rolled out as a canary (it has no pause and no partition); "
            "use analysis after its rollout instead",
        )
    last_pods = 0
    for step_path, step in mappings((*path, "canary", "steps"), canary.get("steps")):
        keys = [k for k in STEP_KEYS if k in step]
        weight = next((k for k in ("weight", "setWeight") if k in step), None)
        if weight is not None and not keys:
            reporter.error(
                (*step_path, weight),
                "traffic-weighted steps need a service mesh or an ingress controller to split "
                "traffic; convoy moves pods instead: use pods: N",
                at_key=True,
            )
            continue
        if len(keys) != 1:
            reporter.error(
                step_path,
                "a canary step has exactly one of pods, pause, analysis"
                + (f" (got {', '.join(keys)})" if keys else ""),
            )
            continue
        value = step[keys[0]]
        if keys[0] == "analysis" and isinstance(value, str) and value not in known:
            reporter.error(
                (*step_path, "analysis"),
                f"unknown analysis template '{value}'{names.suggest(value, known)}",
            )
        elif keys[0] == "pods" and isinstance(value, int) and not isinstance(value, bool):
            if value <= last_pods:
                reporter.error(
                    (*step_path, "pods"),
                    f"pods must grow from step to step ({value} after {last_pods}); a canary "
                    "never takes pods back",
                )
            last_pods = max(last_pods, value)
        elif keys[0] == "pause":
            pause = _duration(reporter, (*step_path, "pause"), value)
            if pause is not None and pause > 86_400:
                reporter.error((*step_path, "pause"), "a pause is at most 24h")


def _duration(reporter: Reporter, path: FieldPath, value: Any) -> float | None:
    """Seconds of a duration string; reports one that is not ``<digits><unit>``."""
    if not isinstance(value, str):
        return None
    try:
        return seconds(value)
    except ValueError:
        reporter.error(path, f"'{value}' is not a duration; write e.g. 500ms, 30s, 5m or 1h")
        return None
