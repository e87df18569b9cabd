"""Self-contained HTML rendering of a :class:`~convoy.observe.report.RunReport`.

One file, inline CSS, no scripts, no external assets; a Content-Security-Policy
forbids loading anything anyway. Every value goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from convoy.redaction import redact

if TYPE_CHECKING:
    from convoy.observe.report import DatastoreRow, RunReport

_CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 8px; word-break: break-word; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600;
         color: #fff; background: var(--muted); }
.badge.state-ok { background: var(--ok); } .badge.state-bad { background: var(--bad); }
.badge.state-warn { background: var(--warn); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px;
           margin: 16px 0; background: #fff; border: 1px solid var(--line);
           border-radius: 6px; padding: 12px 16px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; overflow-wrap: break-word; }
th { background: #eaeef2; font-weight: 600; white-space: nowrap; }
td.bar-cell { width: 60%; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #eff1f3;
       padding: 1px 4px; border-radius: 4px; }
.passed { color: var(--ok); font-weight: 600; } .failed, .error { color: var(--bad);
  font-weight: 600; } .report-only { color: var(--warn); font-weight: 600; }
.muted { color: var(--muted); }
.bar { height: 10px; background: #54aeff; border-radius: 3px; min-width: 2px; }
ol.rollback li { margin: 2px 0; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(value: object) -> str:
    return html.escape(redact(str(value)), quote=True)


def _code(value: object) -> str:
    return f"<code>{esc(value)}</code>" if str(value) else ""


def _images(images: Mapping[str, str]) -> str:
    if not images:
        return '<span class="muted">-</span>'
    return "<br>".join(f"{_code(c)} {_code(i)}" for c, i in images.items())


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    wide: int | None = None,
) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>'
            if i in numeric
            else f'<td class="bar-cell">{cell}</td>'
            if i == wide
            else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _badge_class(report: RunReport) -> str:
    state = report.final_state.lower()
    if state in {"success", "succeeded"} and not report.rollback:
        return "state-ok"
    if state in {"failed", "rolled_back", "rollback_failed", "error"} or report.rollback:
        return "state-bad"
    return "state-warn"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_html(report: RunReport) -> str:
    from convoy.observe.report import state_label

    title = f"convoy run report: {report.policy_name}"
    facts = [
        ("Policy", _code(report.policy_name)),
        ("Digest", _code(report.digest)),
        ("Run", _code(report.run_id)),
        ("Triggered by", esc(report.triggered_by)),
        ("Dry run", "yes" if report.dry_run else "no"),
        ("Started", esc(report.started.isoformat() if report.started else "-")),
        ("Finished", esc(report.finished.isoformat() if report.finished else "-")),
        ("Duration", f"{_seconds(report.duration_seconds)} s"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p>Final state: <span class="badge {_badge_class(report)}" id="final-state">'
        f"{esc(state_label(report))}</span></p>",
        '<dl class="facts">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl>",
        "<h2>Services</h2>",
        _services(report),
        "<h2>Datastores</h2>",
        _datastores(report.datastores),
        "<h2>Rollback</h2>",
        _rollback(report.rollback),
        "<h2>Timings</h2>",
        _timings(report.timings),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _services(report: RunReport) -> str:
    if not report.services:
        return '<p class="muted">No services.</p>'
    rows = [
        (
            _code(s.name),
            _images(s.old_images),
            _images(s.new_images),
            esc(s.status),
            _seconds(s.ready_seconds),
            '<span class="failed">yes</span>' if s.reverted else "no",
        )
        for s in report.services
    ]
    return _table(
        ("Service", "Old image", "New image", "Status", "Ready (s)", "Reverted"), rows, numeric=(4,)
    )


def _datastores(datastores: Sequence[DatastoreRow]) -> str:
    from convoy.observe.report import _validation_summary

    if not datastores:
        return '<p class="muted">No datastores.</p>'
    rows = [
        (
            _code(d.name),
            "<br>".join(_code(m) for m in d.migrations_applied) or "-",
            "<br>".join(_code(m) for m in d.migrations_reverted) or "-",
            f"{d.rows_transformed:,}",
            esc(_validation_summary(d.validation)),
            '<span class="failed">yes</span>' if d.reverted else "no",
            f"{d.rows_restored:,}",
            f"{d.rows_conflicting:,}",
        )
        for d in datastores
    ]
    out = [
        _table(
            (
                "Datastore",
                "Migrations applied",
                "Migrations reverted",
                "Rows transformed",
                "Validation",
                "Reverted",
                "Rows restored",
                "Conflicts (kept)",
            ),
            rows,
            numeric=(3, 6, 7),
        )
    ]
    out += [_validation(d) for d in datastores if (d.validation or {}).get("outcomes")]
    out += [_revert_details(d) for d in datastores if d.rows_restored or d.refused or d.conflicts]
    return "\n".join(out)


def _revert_details(d: DatastoreRow) -> str:
    from convoy.observe.report import revert_details

    items = "".join(
        f'<li class="failed">{esc(line)}</li>'
        if line.startswith("NOT REVERTED")
        else f"<li>{esc(line)}</li>"
        for line in revert_details(d)
    )
    return f"<h3>Revert of {_code(d.name)}</h3><ul>{items}</ul>"


def _validation(d: DatastoreRow) -> str:
    from convoy.observe.report import (
        outcome_columns,
        outcome_examples,
        outcome_observed,
        outcome_result,
    )

    validation: Mapping[str, Any] = d.validation or {}
    rows = []
    for o in validation.get("outcomes") or ():
        result = outcome_result(o)
        css = (
            "passed"
            if result == "passed"
            else "error"
            if result == "error"
            else ("failed" if o.get("on_failure", "rollback") == "rollback" else "report-only")
        )
        count = o.get("unexpected_count")
        rows.append(
            (
                _code(o.get("suite", "")),
                _code(o.get("expectation_type", "")),
                _code(outcome_columns(o)),
                f'<span class="{css}">{esc(result)}</span>',
                esc(outcome_observed(o)),
                "-" if count is None else f"{int(count):,}",
                esc(outcome_examples(o)),
                esc(o.get("on_failure", "rollback")),
            )
        )
    docs = validation.get("data_docs")
    link = ""
    if docs:
        href = docs if str(docs).startswith(("file:", "http:", "https:")) else _file_uri(str(docs))
        link = f'<p>Data Docs: <a href="{esc(href)}">{esc(docs)}</a></p>'
    table = _table(
        (
            "Suite",
            "Expectation",
            "Column(s)",
            "Result",
            "Observed",
            "Unexpected",
            "Examples",
            "On failure",
        ),
        rows,
        numeric=(5,),
    )
    return f"<h3>Validation of {_code(d.name)}</h3>{table}{link}"


def _file_uri(path: str) -> str:
    pure = PurePosixPath(path)
    return pure.as_uri() if pure.is_absolute() else path


def _rollback(steps: Sequence[str]) -> str:
    if not steps:
        return '<p class="muted">Nothing was rolled back.</p>'
    return '<ol class="rollback">' + "".join(f"<li>{esc(s)}</li>" for s in steps) + "</ol>"


def _timings(timings: Mapping[str, float]) -> str:
    if not timings:
        return '<p class="muted">No timings recorded.</p>'
    longest = max(timings.values()) or 1.0
    rows = [
        (
            _code(step),
            f"{seconds:.1f}",
            f'<div class="bar" style="width:{max(0.0, seconds) / longest * 100:.1f}%"></div>',
        )
        for step, seconds in timings.items()
    ]
    return _table(("Step", "Seconds", ""), rows, numeric=(1,), wide=2)
