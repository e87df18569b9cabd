"""The run report's analyses: every measurement (time, value, verdict) of every service.

Rows come from the rollout tasks' XCom ``analysis`` (``AnalysisRun.to_dict()``
of :mod:`convoy.rollout.analysis`), so a failed step shows the values that
failed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _value(value: Any) -> str:
    return "no data" if value is None else f"{float(value):.6g}"


def _runs(services: Iterable[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(s.name, run) for s in services for run in getattr(s, "analysis", ()) or ()]


def markdown(services: Sequence[Any]) -> list[str]:
    """``## Analyses`` lines (nothing when no service was analysed)."""
    runs = _runs(services)
    if not runs:
        return []
    lines = ["", "## Analyses", ""]
    for service, run in runs:
        dry = " (dry run)" if run.get("dryRun") else ""
        lines += [
            f"### `{service}`: {run.get('template')} {run.get('where')}: "
            f"**{run.get('phase')}**{dry}",
            "",
        ]
        if run.get("decision"):
            lines += [f"Decision: **{_cell(str(run['decision']))}**", ""]
        lines += _measured(run)
    return lines


def _measured(run: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Query ({run.get('provider')}): `{_code(run.get('query'))}`; passes in {run.get('range')}",
        "",
        "| Time | Value | Verdict | Note |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m.get('at')} | {_value(m.get('value'))} | {m.get('verdict')} "
        f"| {_cell(m.get('message') or '')} |"
        for m in run.get("measurements") or ()
    ] or ["| - | - | - | no measurement |"]
    lines.append("")
    return lines


def approval_markdown(
    run: Mapping[str, Any], *, workload: str, images: Mapping[str, str], then: str
) -> str:
    """What the approver of an inconclusive analysis reads: where it ran and every measurement.

    ``then``: what approving does (``the canary goes on with step 3: pods: 2``).
    """
    changes = ", ".join(f"`{_code(c)}` → `{_code(i)}`" for c, i in sorted(images.items()))
    lines = [
        f"Analysis **{_cell(str(run.get('template')))}** of service "
        f"`{_code(run.get('service'))}` ({_cell(str(run.get('where')))}) was **inconclusive**: "
        "too many measurements without a number.",
        "",
        f"Workload `{_code(workload)}`" + (f", new images {changes}" if changes else "") + ".",
        "",
        *_measured(run),
        f"- **Approve**: {_cell(then)}.",
        "- **Reject** (or no answer in time): the step fails and the rollback runs.",
        "",
    ]
    return "\n".join(lines)


def html_rows(services: Sequence[Any]) -> list[dict[str, Any]]:
    """Display values of the HTML report's Analyses section (``report.html.j2``; [] hides it)."""
    return [
        {
            "service": service,
            "template": str(run.get("template")),
            "where": str(run.get("where")),
            "phase": str(run.get("phase")),
            "dry_run": bool(run.get("dryRun")),
            "decision": str(run.get("decision") or ""),
            "provider": str(run.get("provider")),
            "query": str(run.get("query")),
            "range": str(run.get("range")),
            "measurements": [
                {
                    "at": str(m.get("at")),
                    "value": _value(m.get("value")),
                    "verdict": str(m.get("verdict")),
                    "note": str(m.get("message") or ""),
                }
                for m in run.get("measurements") or ()
            ],
        }
        for service, run in _runs(services)
    ]


def _code(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("`", "'")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
