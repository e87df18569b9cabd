"""Server-rendered HTML of the "Upgrades" page. Every value is redacted and escaped; no script."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from convoy.observe.progress import format_duration
from convoy.redaction import redact
from convoy.ui.policies import PolicyView
from convoy.ui.runs import RunView

_CSS = """
:root{--ok:#15803d;--bad:#b91c1c;--run:#1d4ed8;--skip:#6b7280;--warn:#b45309;--line:#e5e7eb}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#111827;
background:#f9fafb}
main{max-width:1200px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:17px;margin:0}h3{font-size:13px;margin:14px 0 6px;
text-transform:uppercase;letter-spacing:.04em;color:#4b5563}
.sub{color:#4b5563;margin:0 0 14px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin:0 0 14px}
.head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.meta{color:#6b7280;font-size:12.5px}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;
color:#fff;background:var(--skip)}
.s-success,.s-valid{background:var(--ok)}.s-failed,.s-invalid{background:var(--bad)}
.s-running,.s-queued{background:var(--run)}.s-upstream_failed,.s-up_for_retry{background:var(--warn)}
.s-skipped{background:var(--skip)}.s-none,.s-scheduled{background:#9ca3af}
.errors{margin:8px 0 0;padding:0;list-style:none}
.errors li{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;background:#fef2f2;
border-left:3px solid var(--bad);padding:4px 8px;margin:3px 0;white-space:pre-wrap}
.errors li.warning{background:#fffbeb;border-color:var(--warn)}
.flow{display:flex;flex-wrap:wrap;gap:6px;align-items:stretch}
.wave,.ds{border:1px solid var(--line);border-radius:6px;padding:6px 8px;min-width:110px;
font-size:12px}
.wave b,.ds b{display:block;font-size:12px;color:#374151}
.ds{background:#f5f3ff;border-color:#ddd6fe}
.arrow{align-self:center;color:#9ca3af}
.chip{display:inline-block;border-radius:4px;padding:0 6px;margin:1px 2px 1px 0;font-size:12px;
background:#eef2ff;color:#1e3a8a}
.chip.s-success{background:#dcfce7;color:#14532d}.chip.s-failed{background:#fee2e2;color:#7f1d1d}
.chip.s-running,.chip.s-queued{background:#dbeafe;color:#1e3a8a}
.chip.s-upstream_failed{background:#ffedd5;color:#7c2d12}
.chip.s-skipped{background:#f3f4f6;color:#4b5563}.chip.s-none{background:#f9fafb;color:#6b7280;
border:1px dashed #d1d5db}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 6px;border-top:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:#6b7280;font-weight:600}
td.mono{font-family:ui-monospace,Menlo,monospace;font-size:12px;word-break:break-all}
.bar{height:8px;background:#e5e7eb;border-radius:4px;overflow:hidden;width:160px;margin:2px 0}
.bar span{display:block;height:100%;background:var(--run)}
.empty{color:#6b7280;font-style:italic}
.notice{background:#fffbeb;border:1px solid #fde68a;padding:6px 10px;border-radius:6px}
a{color:#1d4ed8}
"""


def esc(value: object) -> str:
    return html.escape(redact(str(value)), quote=True)


#: The badge colour (a state class) of each approval status.
_APPROVAL_BADGE = {
    "awaiting approval": "up_for_retry",
    "approved": "success",
    "not approved": "failed",
}


def _badge(state: str, label: str | None = None) -> str:
    return f'<span class="badge s-{esc(state)}">{esc(label or state)}</span>'


def _chip(name: str, state: str | None = None) -> str:
    cls = f"chip s-{esc(state)}" if state else "chip"
    title = f' title="{esc(state)}"' if state else ""
    return f'<span class="{cls}"{title}>{esc(name)}</span>'


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _position(value: Any) -> str:
    return "before rollout" if value == "before-rollout" else f"after wave {value}"


def _plan(policy: PolicyView) -> str:
    plan = policy.plan or {}
    phases: list[Mapping[str, Any]] = list(plan.get("datastore_phases", []))
    parts: list[str] = []

    def datastores_at(position: Any) -> None:
        for ph in phases:
            if ph.get("position") == position:
                stages = ", ".join(str(s.get("stage")) for s in ph.get("steps", []))
                parts.append(
                    f'<div class="ds"><b>datastore {esc(ph.get("datastore"))} '
                    f"({esc(ph.get('type'))})</b>{esc(stages)}</div>"
                )

    datastores_at("before-rollout")
    for wave in plan.get("waves", []):
        chips = "".join(_chip(str(s.get("service"))) for s in wave.get("steps", []))
        parts.append(f'<div class="wave"><b>Wave {esc(wave.get("index"))}</b>{chips}</div>')
        datastores_at(wave.get("index"))
    if not parts:
        return '<p class="empty">no steps</p>'
    flow = '<span class="arrow">→</span>'.join(parts)
    rb = "automatic" if plan.get("rollback_automatic") else "on demand"
    return (
        f'<div class="flow">{flow}</div><p class="meta">max parallel '
        f"{esc(plan.get('max_parallel'))} · namespace {esc(plan.get('namespace'))} · rollback "
        f"{esc(rb)} · plan digest <code>{esc(str(plan.get('digest', ''))[:12])}</code></p>"
    )


def _diagnostics(policy: PolicyView) -> str:
    items = []
    for d in (*policy.errors, *policy.warnings):
        field = f"{d.path}: " if d.path else ""
        prefix = "warning: " if d.severity != "error" else ""
        items.append(
            f'<li class="{esc(d.severity)}">{esc(d.location)}: {esc(prefix)}{esc(field)}'
            f"{esc(d.message)}</li>"
        )
    return f'<ul class="errors">{"".join(items)}</ul>' if items else ""


def _progress(run: RunView) -> str:
    if not run.running or run.overall is None:
        return ""
    out = []
    for p in (run.overall, *run.task_progress):
        pct = p.percent or 0.0
        out.append(
            f'<div class="bar" title="{esc(p.label)}"><span style="width:{pct:.1f}%"></span></div>'
            f'<div class="meta">{esc(p.label)}: {esc(p.text)}</div>'
        )
    return "".join(out)


def _run_row(run: RunView, now: dt.datetime, airflow_root: str) -> str:
    run_url = f"{airflow_root}dags/{quote(run.dag_id, safe='')}/runs/{quote(run.run_id, safe='')}"
    duration = run.duration_seconds(now)
    services = "".join(_chip(n, s) for n, s in run.services) or '<span class="empty">&#8211;</span>'
    stores = "".join(_chip(n, s) for n, s in run.datastores) or '<span class="empty">&#8211;</span>'
    rollback = _badge(run.rollback, f"rollback {run.rollback}") if run.rollback else ""
    if run.rollback in ("none", "skipped"):
        rollback = ""
    if run.approval:
        rollback = _badge(_APPROVAL_BADGE[run.approval], run.approval) + " " + rollback
    report = (
        f'<a href="{esc(run.report_url)}" target="_blank" rel="noopener">report</a>'
        if run.report_url
        else '<span class="empty">none yet</span>'
    )
    return (
        f'<tr><td class="mono"><a href="{esc(run_url)}" target="_top">{esc(run.run_id)}</a>'
        f'<div class="meta">{esc(run.run_type)}</div></td>'
        f"<td>{_badge(run.state)} {rollback}{_progress(run)}</td>"
        f'<td>{esc(_when(run.start))}<div class="meta">'
        f"{esc(format_duration(duration) if duration is not None else '-')}</div></td>"
        f"<td>{services}</td><td>{stores}</td><td>{report}</td></tr>"
    )


def _runs(runs: Sequence[RunView], now: dt.datetime, airflow_root: str) -> str:
    if not runs:
        return '<p class="empty">no runs yet</p>'
    rows = "".join(_run_row(r, now, airflow_root) for r in runs)
    return (
        "<table><thead><tr><th>run</th><th>state / progress</th><th>started / duration</th>"
        "<th>services</th><th>datastores</th><th>report</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _policy(
    policy: PolicyView, runs: Sequence[RunView], now: dt.datetime, airflow_root: str
) -> str:
    name = policy.dag_id or policy.file
    state = _badge("valid" if policy.valid else "invalid")
    n_err = len(policy.errors)
    counts = f" · {n_err} error{'s' if n_err != 1 else ''}" if n_err else ""
    title = name
    if policy.dag_id:
        dag_url = f"{airflow_root}dags/{quote(policy.dag_id, safe='')}"
        title_html = f'<a href="{esc(dag_url)}" target="_top">{esc(title)}</a>'
    else:
        title_html = esc(title)
    meta = " · ".join(
        esc(x)
        for x in (
            policy.file,
            policy.description,
            f"owner {policy.owner}" if policy.owner else "",
            f"schedule {policy.schedule}" if policy.schedule else "manual",
        )
        if x
    )
    body = [
        f'<section class="card" id="policy-{esc(name)}"><div class="head"><h2>{title_html}</h2>'
        f'{state}<span class="meta">{meta}{esc(counts)}</span></div>',
        _diagnostics(policy),
    ]
    if policy.valid:
        body.append(f"<h3>Plan</h3>{_plan(policy)}")
    body.append(f"<h3>Recent runs</h3>{_runs(runs, now, airflow_root)}</section>")
    return "".join(body)


def render_page(
    policies: Sequence[PolicyView],
    runs: Mapping[str, Sequence[RunView]],
    *,
    now: dt.datetime,
    airflow_root: str = "/",
    runs_error: str | None = None,
    refresh_seconds: int = 15,
) -> str:
    """The whole page. Auto-refreshes while a run is in progress."""
    root = airflow_root if airflow_root.endswith("/") else airflow_root + "/"
    invalid = sum(1 for p in policies if not p.valid)
    running = any(r.running for rs in runs.values() for r in rs)
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if running else ""
    summary = (
        f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}, {invalid} invalid"
        f"{' · a run is in progress (page refreshes)' if running else ''}"
        f" · {_when(now)}"
    )
    notice = f'<p class="notice">Runs are unavailable: {esc(runs_error)}</p>' if runs_error else ""
    cards = (
        "".join(_policy(p, runs.get(p.dag_id or "", ()), now, root) for p in policies)
        or '<p class="empty">No policies found.</p>'
    )
    return redact(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}<title>Upgrades · convoy</title><style>{_CSS}</style></head><body><main>"
        f'<h1>Upgrades</h1><p class="sub">{esc(summary)}</p>{notice}{cards}</main></body></html>'
    )
