"""``convoy settings load``: Astro CLI ``airflow_settings.yaml`` -> Airflow's metadata DB.

The file format is the Astro CLI's (``astro dev object import``)::

    airflow:
      connections:
        - {conn_id: ..., conn_type: ..., conn_host: ..., conn_schema: ...,
           conn_login: ..., conn_password: ..., conn_port: ..., conn_extra: {...},
           conn_description: ...}
      pools:
        - {pool_name: ..., pool_slot: 8, pool_description: ...}
      variables:
        - {variable_name: ..., variable_value: ..., variable_description: ...}

Entries are created or updated through Airflow's own models (``Connection``,
``Pool.create_or_update_pool``, ``Variable``) in one session per entry kind, the
same code paths as ``airflow connections import`` / ``airflow pools set``; an
entry already equal to the file is left untouched, so a rerun changes nothing.
A relative ``kube_config_path`` in ``conn_extra`` is resolved against the
settings file's directory. Passwords are never printed: output and errors name
fields, not secret values.

This module parses and validates, without Airflow; errors are
:class:`~convoy.policy.errors.Diagnostic` lines with file, line and column.
Writing to the metadata DB is the Airflow layer's
(:mod:`convoy.airflow.settings`: ``apply_settings`` and ``load``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from convoy.policy.errors import Diagnostic, PolicyError
from convoy.policy.source import Document, FieldPath, parse_yaml, render_path

MASK = "***"

CONNECTION_KEYS = {
    "conn_id": "conn_id",
    "conn_type": "conn_type",
    "conn_host": "host",
    "conn_schema": "schema",
    "conn_login": "login",
    "conn_password": "password",
    "conn_port": "port",
    "conn_extra": "extra",
    "conn_description": "description",
}
POOL_KEYS = ("pool_name", "pool_slot", "pool_description", "pool_include_deferred")
VARIABLE_KEYS = ("variable_name", "variable_value", "variable_description")
#: ``conn_extra`` keys holding a path that is resolved against the settings file.
PATH_EXTRAS = ("kube_config_path",)
#: ``conn_extra`` keys whose values are secrets (masked in output, like the password).
SECRET_EXTRA_WORDS = ("password", "secret", "token", "key", "private", "credential")

Action = Literal["created", "updated", "unchanged"]


class SettingsError(PolicyError):
    """The settings file is invalid; carries every diagnostic (the CLI exits 1)."""


@dataclass(frozen=True)
class ConnectionSpec:
    conn_id: str
    conn_type: str
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str = ""
    include_deferred: bool = False


@dataclass(frozen=True)
class VariableSpec:
    key: str
    value: str
    description: str | None = None


@dataclass(frozen=True)
class Settings:
    file: Path
    connections: tuple[ConnectionSpec, ...]
    pools: tuple[PoolSpec, ...]
    variables: tuple[VariableSpec, ...]


@dataclass(frozen=True)
class Change:
    """What loading did (or would do, in a dry run) to one entry."""

    kind: Literal["connection", "pool", "variable"]
    name: str
    action: Action
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.action}" + (
            f" ({self.detail})" if self.detail else ""
        )


# --------------------------------------------------------------------------- parsing


class _Reader:
    def __init__(self, doc: Document, file: str) -> None:
        self.doc, self.file = doc, file
        self.problems: list[Diagnostic] = []

    def error(self, path: FieldPath, message: str, *, value: bool = False) -> None:
        mark = self.doc.value_mark(path) if value else self.doc.anchor(path)
        self.problems.append(
            Diagnostic(self.file, mark.line, mark.column, render_path(path), message)
        )

    def entries(
        self, data: Mapping[str, Any], key: str
    ) -> list[tuple[FieldPath, Mapping[str, Any]]]:
        value = data.get(key)
        path: FieldPath = ("airflow", key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list of mappings, not {type(value).__name__}")
            return []
        out: list[tuple[FieldPath, Mapping[str, Any]]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.error((*path, i), "must be a mapping")
                continue
            out.append(((*path, i), item))
        return out

    def keys(self, path: FieldPath, item: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in item:
            if key not in allowed:
                self.error(
                    (*path, key), f"unknown key '{key}'; expected one of {', '.join(allowed)}"
                )

    def text(
        self,
        path: FieldPath,
        item: Mapping[str, Any],
        key: str,
        *,
        required: bool = False,
        secret: bool = False,
    ) -> str | None:
        value = item.get(key)
        if value is None:
            if required:
                self.error(path, f"'{key}' is required")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            shown = "a value" if secret else repr(value)
            self.error((*path, key), f"{shown} is not a string", value=True)
            return None
        text = str(value)
        if required and not text.strip():
            self.error((*path, key), "must not be empty", value=True)
            return None
        return text

    def integer(
        self,
        path: FieldPath,
        item: Mapping[str, Any],
        key: str,
        *,
        minimum: int,
        required: bool = False,
    ) -> int | None:
        value = item.get(key)
        if value is None:
            if required:
                self.error(path, f"'{key}' is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error((*path, key), f"{value!r} must be an integer >= {minimum}", value=True)
            return None
        return value


def _resolve_extra(extra: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(extra)
    for key in PATH_EXTRAS:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            out[key] = str((base / value).resolve())
    return out


def parse_settings(text: str, file: str | Path) -> Settings:
    """Validate an Astro CLI settings file; raise :class:`SettingsError` with every problem."""
    path = Path(file)
    name = str(file)
    doc, problems = parse_yaml(text, name)
    if doc is None:
        raise SettingsError(problems)
    reader = _Reader(doc, name)
    reader.problems.extend(problems)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("airflow"), dict):
        reader.error((), "expected a mapping with an 'airflow' key (Astro CLI settings format)")
        raise SettingsError(reader.problems)
    root = data["airflow"]
    for key in root:
        if key not in ("connections", "pools", "variables"):
            reader.error(
                ("airflow", key), f"unknown key '{key}'; expected connections, pools, variables"
            )

    connections: list[ConnectionSpec] = []
    seen: dict[str, set[str]] = {"connection": set(), "pool": set(), "variable": set()}

    def unique(kind: str, p: FieldPath, value: str | None, key: str) -> None:
        if value is None:
            return
        if value in seen[kind]:
            reader.error((*p, key), f"duplicate {kind} '{value}'")
        seen[kind].add(value)

    for p, item in reader.entries(root, "connections"):
        reader.keys(p, item, tuple(CONNECTION_KEYS))
        conn_id = reader.text(p, item, "conn_id", required=True)
        conn_type = reader.text(p, item, "conn_type", required=True)
        unique("connection", p, conn_id, "conn_id")
        extra_raw = item.get("conn_extra")
        extra: dict[str, Any] = {}
        if isinstance(extra_raw, str):
            try:
                loaded = json.loads(extra_raw) if extra_raw.strip() else {}
            except json.JSONDecodeError as exc:
                reader.error((*p, "conn_extra"), f"not valid JSON: {exc.msg}", value=True)
                loaded = {}
            if isinstance(loaded, dict):
                extra = loaded
            else:
                reader.error((*p, "conn_extra"), "must be a JSON object", value=True)
        elif isinstance(extra_raw, dict):
            extra = extra_raw
        elif extra_raw is not None:
            reader.error(
                (*p, "conn_extra"), "must be a mapping (or a JSON object string)", value=True
            )
        host = reader.text(p, item, "conn_host")
        schema = reader.text(p, item, "conn_schema")
        login = reader.text(p, item, "conn_login")
        password = reader.text(p, item, "conn_password", secret=True)
        port = reader.integer(p, item, "conn_port", minimum=1)
        description = reader.text(p, item, "conn_description")
        if conn_id and conn_type:
            connections.append(
                ConnectionSpec(
                    conn_id,
                    conn_type,
                    host,
                    schema,
                    login,
                    password,
                    port,
                    _resolve_extra(extra, path.parent),
                    description,
                )
            )

    pools: list[PoolSpec] = []
    for p, item in reader.entries(root, "pools"):
        reader.keys(p, item, POOL_KEYS)
        pool_name = reader.text(p, item, "pool_name", required=True)
        slots = reader.integer(p, item, "pool_slot", minimum=-1, required=True)
        unique("pool", p, pool_name, "pool_name")
        deferred = item.get("pool_include_deferred", False)
        if not isinstance(deferred, bool):
            reader.error((*p, "pool_include_deferred"), "must be true or false", value=True)
            deferred = False
        if pool_name and slots is not None:
            desc = reader.text(p, item, "pool_description") or ""
            pools.append(PoolSpec(pool_name, slots, desc, deferred))

    variables: list[VariableSpec] = []
    for p, item in reader.entries(root, "variables"):
        reader.keys(p, item, VARIABLE_KEYS)
        key = reader.text(p, item, "variable_name", required=True)
        unique("variable", p, key, "variable_name")
        raw = item.get("variable_value")
        if raw is None:
            reader.error(p, "'variable_value' is required")
            continue
        value = raw if isinstance(raw, str) else json.dumps(raw)
        if key:
            variables.append(VariableSpec(key, value, reader.text(p, item, "variable_description")))

    if reader.problems:
        raise SettingsError(reader.problems)
    return Settings(path, tuple(connections), tuple(pools), tuple(variables))


def read_settings(file: str | Path) -> Settings:
    """:func:`parse_settings` of a file on disk (``FileNotFoundError`` if missing)."""
    path = Path(file)
    return parse_settings(path.read_text(encoding="utf-8"), path)


# --------------------------------------------------------------------------- masking


def _is_secret_extra(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_EXTRA_WORDS) and key not in PATH_EXTRAS


def masked_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (MASK if _is_secret_extra(k) else v) for k, v in extra.items()}


def describe_connection(spec: ConnectionSpec) -> str:
    """One line about a connection with the password and secret extras masked."""
    parts = [f"conn_type={spec.conn_type}"]
    for label, value in (("host", spec.host), ("schema", spec.schema), ("login", spec.login)):
        if value:
            parts.append(f"{label}={value}")
    if spec.port:
        parts.append(f"port={spec.port}")
    if spec.password:
        parts.append(f"password={MASK}")
    if spec.extra:
        parts.append(f"extra={json.dumps(masked_extra(spec.extra), sort_keys=True)}")
    return ", ".join(parts)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (for log scrubbing and tests)."""
    found = [c.password for c in settings.connections if c.password]
    for conn in settings.connections:
        found += [str(v) for k, v in conn.extra.items() if _is_secret_extra(k) and v]
    return found
