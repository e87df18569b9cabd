"""The run report's analyses: every measurement (time, value, verdict) of every service.

Rows come from the rollout tasks' XCom ``analysis`` (``AnalysisRun.to_dict()``
of :mod:`convoy.rollout.analysis`), so a failed step shows the values that
failed it.
"""

from __future__ import annotations

import html
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
            f"Query ({run.get('provider')}): `{_code(run.get('query'))}`; "
            f"passes in {run.get('range')}",
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


def html_section(services: Sequence[Any]) -> str:
    """``<section id="analyses">`` of the HTML report ('' when nothing was analysed)."""
    runs = _runs(services)
    if not runs:
        return ""
    e = html.escape
    parts = ['<section id="analyses"><h2>Analyses</h2>']
    for service, run in runs:
        parts.append(
            f"<h3><code>{e(service)}</code>: {e(str(run.get('template')))} "
            f'{e(str(run.get("where")))}: <strong class="phase-{e(str(run.get("phase")))}">'
            f"{e(str(run.get('phase')))}</strong>{' (dry run)' if run.get('dryRun') else ''}</h3>"
            f"<p>Query ({e(str(run.get('provider')))}): <code>{e(str(run.get('query')))}</code>; "
            f"passes in {e(str(run.get('range')))}</p>"
            "<table><thead><tr><th>Time</th><th>Value</th><th>Verdict</th><th>Note</th></tr>"
            "</thead><tbody>"
        )
        for m in run.get("measurements") or ():
            parts.append(
                f"<tr><td>{e(str(m.get('at')))}</td><td>{e(_value(m.get('value')))}</td>"
                f"<td>{e(str(m.get('verdict')))}</td><td>{e(str(m.get('message') or ''))}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</section>")
    return "".join(parts)


def _code(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("`", "'")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
