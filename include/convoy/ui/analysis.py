"""The analysis phase and verdict of a run's verified steps, for the Upgrades page.

Read from the rollout and wave-analysis tasks' XCom ``analysis`` (a list of
``AnalysisRun.to_dict()``, pushed after every measurement): one chip per
analysis, ``<service> <template> (<where>): <phase>`` with the latest value,
coloured by phase; a running analysis shows how many measurements it has, an
inconclusive one that went to the approval gate the decision
(``awaiting approval``, ``approved by alice``, ``rejected by alice``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: XCom key of a task's analyses (convoy.airflow.analysis.ANALYSIS_KEY).
ANALYSIS_KEY = "analysis"
#: Chip colour (a task-state class of the page's stylesheet) of each phase.
PHASE_STATE = {
    "successful": "success",
    "failed": "failed",
    "inconclusive": "up_for_retry",
    "running": "running",
}


def _value(value: Any) -> str:
    try:
        return "no data" if value is None else f"{float(value):.4g}"
    except (TypeError, ValueError):
        return "?"


def chip(run: Mapping[str, Any]) -> tuple[str, str]:
    """``(label, state class)`` of one analysis."""
    phase = str(run.get("phase") or "running")
    measurements = [m for m in run.get("measurements") or () if isinstance(m, Mapping)]
    label = f"{run.get('service')} {run.get('template')} ({run.get('where')}): {phase}"
    if run.get("dryRun"):
        label += " (dry run)"
    if phase == "running":
        label += f" {len(measurements)}/{run.get('count') or '?'}"
    if measurements:
        last = measurements[-1]
        label += f" · {_value(last.get('value'))} {last.get('verdict')}"
    if run.get("decision"):
        label += f" · {run.get('decision')}"
    return label, PHASE_STATE.get(phase, "none")


def analysis_chips(analyses: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Chips of every analysis of a run (``analyses``: task key -> XCom value), by task."""
    out = []
    for _task, runs in sorted(analyses.items()):
        if isinstance(runs, list):
            out += [chip(r) for r in runs if isinstance(r, Mapping)]
    return tuple(out)


__all__ = ["ANALYSIS_KEY", "PHASE_STATE", "analysis_chips", "chip"]
