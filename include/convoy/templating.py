"""HTML pages from Jinja2 templates (``convoy/templates``): autoescaped and redacted.

Every ``{{ value }}`` is redacted (:func:`convoy.redaction.redact`: URI
passwords, secret parameters, webhook paths) and then HTML-escaped by Jinja2's
autoescape, so a template cannot forget either; only macros' output (already
built from escaped values) passes as markup. Undefined names are errors, not
empty strings.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from convoy.redaction import redact

#: Templates (and the CSS they include) ship as package data.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def _finalize(value: Any) -> Any:
    if isinstance(value, Markup):
        return value
    return redact(str(value))


@functools.cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """``template`` (a file name under ``convoy/templates``) rendered with ``context``."""
    return environment().get_template(template).render(**context)
