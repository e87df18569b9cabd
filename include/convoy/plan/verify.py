"""What verifies each step: canary steps and analyses, as plain JSON for the run record.

Preflight freezes these with the plan (:class:`convoy.plan.record.RunRecord`
``verify`` and ``wave_verify``); the rollout tasks execute them from there,
never from the policy as it is later, and never through task arguments (those
are Jinja templates to Airflow, and a query holds ``{{ variables }}``).

- ``verify[service]``: ``{"canary": [steps], "analyses": [names], "templates":
  {name: AnalysisSpec.to_dict()}}`` of a service with canary steps or
  analyses after its rollout (``services[].analysis``, else
  ``rollout.analysis``); services without either are left out.
- ``wave_verify``: ``{"analyses": [names], "templates": {...}}`` of
  ``rollout.waveAnalysis`` (empty without it), run after each wave.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from convoy.policy.models import Policy


def _templates(policy: Policy, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    from convoy.rollout.analysis import AnalysisSpec

    known = {t.name: t for t in policy.analysis_templates}
    return {
        n: AnalysisSpec.from_template(known[n]).to_dict() for n in sorted(set(names)) if n in known
    }


def service_verify(policy: Policy, service: str) -> dict[str, Any]:
    """The verification of one service's rollout; ``{}`` when it has none."""
    svc = next(s for s in policy.services if s.name == service)
    after = svc.analysis if svc.analysis is not None else policy.rollout.analysis
    steps = [s.model_dump(exclude_none=True) for s in svc.canary.steps] if svc.canary else []
    if not steps and not after:
        return {}
    used = {str(s["analysis"]) for s in steps if "analysis" in s} | set(after)
    return {"canary": steps, "analyses": list(after), "templates": _templates(policy, used)}


def verify_specs(policy: Policy, services: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``service -> service_verify`` for the services that have one."""
    return {s: spec for s in services if (spec := service_verify(policy, s))}


def wave_verify(policy: Policy) -> dict[str, Any]:
    """``rollout.waveAnalysis`` with its templates; ``{}`` without it."""
    names = list(policy.rollout.wave_analysis)
    if not names:
        return {}
    return {"analyses": names, "templates": _templates(policy, names)}


__all__ = ["service_verify", "verify_specs", "wave_verify"]
