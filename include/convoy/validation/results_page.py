"""A self-contained HTML page of the outcomes convoy evaluated itself (no GX import).

GX's Data Docs only know the expectations GX ran. The expectations of the
one-pass path (:mod:`convoy.validation.onepass`) are written to
``data_docs/<datastore>/index.html`` when GX did not run at all, else to
``one-pass.html`` next to GX's site. Values come from the outcomes, which are
already redacted and truncated (:mod:`convoy.validation.redact`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from convoy.validation.models import ExpectationOutcome
from convoy.validation.redact import jsonable

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    ".ok{color:#16632d}.fail{color:#a4161a}"
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return html.escape(json.dumps(jsonable(value), default=str))


def write_results_page(
    docs_dir: Path, datastore: str, outcomes: Sequence[ExpectationOutcome], *, index: bool
) -> str | None:
    """Write the page and return its path; None when there is nothing to show or on error."""
    if not outcomes:
        return None
    rows = []
    for o in outcomes:
        state = "passed" if o.success else ("error" if o.error else "failed")
        css = "ok" if o.success else "fail"
        rows.append(
            "<tr>"
            f"<td>{html.escape(o.suite)}</td>"
            f"<td>{html.escape(o.expectation_type)}</td>"
            f"<td>{_cell(dict(o.kwargs))}</td>"
            f'<td class="{css}">{state}</td>'
            f"<td>{_cell(o.observed_value)}</td>"
            f"<td>{'' if o.element_count is None else o.element_count}</td>"
            f"<td>{'' if o.unexpected_count is None else o.unexpected_count}</td>"
            f"<td>{_cell(list(o.unexpected_examples)) if o.unexpected_examples else ''}</td>"
            f"<td>{html.escape(o.error or '')}</td>"
            "</tr>"
        )
    title = html.escape(f"{datastore}: validation (one scan per table)")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{title}</h1><table><tr><th>table</th><th>expectation</th><th>arguments</th>"
        "<th>result</th><th>observed</th><th>rows</th><th>unexpected</th>"
        "<th>examples</th><th>error</th></tr>" + "".join(rows) + "</table></body></html>\n"
    )
    target = Path(docs_dir) / ("index.html" if index else "one-pass.html")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError:
        return None
    return str(target)
