"""Jinja-looking templates in SQL/Mongo expressions.

Only the run's data interval is supported, and it is bound as a query
parameter; anything else would either be pasted into a query or silently left
as literal text, so it is refused.
"""

from __future__ import annotations

import re

from convoy.policy.reporter import Reporter
from convoy.policy.source import FieldPath

ALLOWED = frozenset({"data_interval_start", "data_interval_end"})
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def check_templates(reporter: Reporter, path: FieldPath, text: str, *, allowed: bool) -> None:
    """Report templates in ``text``; ``allowed`` says whether the data interval may be used."""
    for match in _TEMPLATE.finditer(text):
        inner = (match.group(1) or "").strip()
        if allowed and inner in ALLOWED:
            continue
        if allowed:
            reporter.error(
                path,
                f"template '{match.group(0)}' is not supported; only "
                "{{ data_interval_start }} and {{ data_interval_end }} may be referenced",
            )
        else:
            reporter.error(
                path,
                f"template '{match.group(0)}' is not supported here; only where/filter may "
                "reference {{ data_interval_start }} and {{ data_interval_end }}",
            )
