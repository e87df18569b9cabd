"""Name and reference rules: DNS-1123 names, SQL/Mongo identifiers, image references.

Each check returns ``None`` when the value is fine, else a message that says
how to fix it, so callers only add the field path and position.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Postgres truncates identifiers longer than NAMEDATALEN-1 bytes silently.
MAX_IDENTIFIER = 63

# Docker distribution reference grammar, restricted to sha256 digests.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[^@]+))?$"
)
# Airflow stores connection ids in a 250-character column; a leading '-' would read as
# an option on the airflow CLI.
CONN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")
MAX_CONN_ID = 250
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([numkMGTPE]|[KMGTPE]i|[eE][0-9]+)?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    options = sorted(set(choices))
    folded = {_fold(c): c for c in options}
    if _fold(word) in folded:
        return f" (did you mean '{folded[_fold(word)]}'?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fold(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "")


def dns_label(value: str, what: str) -> str | None:
    if len(value) <= 63 and _LABEL.match(value):
        return None
    return (
        f"{what} '{value}' is not a valid DNS-1123 label: use at most 63 lowercase "
        "letters, digits and '-', starting and ending with a letter or digit"
    )


def dns_subdomain(value: str, what: str) -> str | None:
    if len(value) <= 253 and _SUBDOMAIN.match(value):
        return None
    return (
        f"{what} '{value}' is not a valid DNS-1123 subdomain: use at most 253 lowercase "
        "letters, digits, '-' and '.', each part starting and ending with a letter or digit"
    )


def quantity(value: str, what: str) -> str | None:
    """A Kubernetes resource quantity such as ``500m``, ``256Mi`` or ``1.5``."""
    if _QUANTITY.match(value):
        return None
    return (
        f"{what} '{value}' is not a Kubernetes quantity; write e.g. '500m' or '1' for CPU "
        "and '256Mi' or '1Gi' for memory"
    )


def conn_id(value: str, what: str = "connId") -> str | None:
    """An Airflow connection id; a URI or connection string is refused without echoing it."""
    if CONN_ID.match(value):
        return None
    rule = f"1-{MAX_CONN_ID} letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    if "://" in value or "@" in value or "=" in value or ":" in value:
        return (
            f"{what} must be an Airflow connection id, not a URI or connection string "
            "(those carry passwords into the DAG, logs and CI output); create the connection "
            "(airflow connections add, AIRFLOW_CONN_<ID> or a secrets backend) and use its "
            f"id: {rule}"
        )
    if len(value) > MAX_CONN_ID:
        return f"{what} is {len(value)} characters long; an Airflow connection id is {rule}"
    return f"{what} '{value}' is not a valid Airflow connection id: use {rule}"


def identifier(value: str, what: str) -> str | None:
    if len(value) <= MAX_IDENTIFIER and _IDENTIFIER.match(value):
        return None
    return (
        f"{what} '{value}' must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*, "
        f"at most {MAX_IDENTIFIER} characters); convoy quotes identifiers itself, "
        "so write the bare name without quotes, spaces or dashes"
    )


def table_name(value: str, what: str = "table") -> str | None:
    """``table`` or ``schema.table``, each part a plain identifier."""
    parts = value.split(".")
    if len(parts) <= 2 and all(identifier(p, what) is None for p in parts):
        return None
    return (
        f"{what} '{value}' must be 'table' or 'schema.table' made of plain identifiers "
        f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_IDENTIFIER} characters each); convoy quotes "
        "identifiers itself, so write bare names without quotes or spaces"
    )


@dataclass(frozen=True)
class ImageProblem:
    """What is wrong with an image reference; warnings do not fail the policy."""

    message: str
    severity: str = "error"


def image_reference(value: str) -> ImageProblem | None:
    match = _IMAGE.match(value)
    if match is None or len(match["name"]) > 255:
        return ImageProblem(
            f"'{value}' is not a valid image reference; expected "
            "[registry/]repository:tag or [registry/]repository@sha256:<64 hex digits>"
        )
    digest = match["digest"]
    if digest is not None and not _DIGEST.match(digest):
        return ImageProblem(
            f"image '{value}' has an invalid digest '{digest}'; expected sha256:<64 lowercase "
            "hex digits>"
        )
    if match["tag"] is None and digest is None:
        return ImageProblem(
            f"image '{value}' has no tag; pin a version, e.g. '{value}:1.2.3' or "
            f"'{value}@sha256:<digest>'"
        )
    if match["tag"] == "latest" and digest is None:
        return ImageProblem(
            f"image '{value}' uses the moving tag 'latest'; pin a version so rollouts and "
            "rollbacks are reproducible",
            "warning",
        )
    return None
