"""Analysis providers of a rollout pod, from Kubernetes Secrets through environment variables.

A rollout pod (``execution: kubernetes``) has no Airflow connection. Each
template's provider names a Secret (``secretRef``); the pod spec maps every key
of it to an environment variable with ``valueFrom.secretKeyRef``, so the kubelet
hands the values to the runner and they are never in the pod's arguments, the
task's XCom or a log line.

The variable names come from the verify spec alone (the sorted Secret names,
then the key): the Airflow task that builds the pod and the runner inside it
derive the same names from the same frozen spec, with nothing else to agree on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convoy.policy.analysis import SECRET_KEYS
from convoy.rollout.errors import ProviderSecretMissing
from convoy.rollout.providers import Provider

ENV_PREFIX = "CONVOY_PROVIDER_"


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable of the rollout pod: ``env`` <- key ``key`` of Secret ``secret``."""

    env: str
    secret: str
    key: str


def _secrets(templates: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted({str(t.get("secret") or "") for t in templates.values()} - {""})


def _env(index: int, key: str) -> str:
    return f"{ENV_PREFIX}{index}_{key.upper()}"


def secret_env(templates: Mapping[str, Mapping[str, Any]]) -> list[SecretEnv]:
    """Every variable the pod needs for ``templates`` (``AnalysisSpec.to_dict()`` by name)."""
    return [
        SecretEnv(_env(i, key), name, key)
        for i, name in enumerate(_secrets(templates))
        for key in SECRET_KEYS
    ]


def providers_from_env(
    templates: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> dict[tuple[str, str], Provider]:
    """One provider per ``(provider, connId)``, built from the variables of :func:`secret_env`.

    Raises :class:`ProviderSecretMissing` for a template without a Secret or a
    Secret without ``address``, before anything is rolled out: a step that
    cannot be verified must not start.
    """
    from convoy.rollout.providers.prometheus import (
        HttpCheckProvider,
        PrometheusProvider,
        auth_header,
        base_url,
    )

    index = {name: i for i, name in enumerate(_secrets(templates))}
    out: dict[tuple[str, str], Provider] = {}
    for spec in templates.values():
        kind, conn_id = str(spec["provider"]), str(spec["conn_id"])
        secret = str(spec.get("secret") or "")
        if (kind, conn_id) in out:
            continue
        if secret not in index:
            raise ProviderSecretMissing(kind, conn_id, secret, _env(0, "address"))
        i = index[secret]
        address = environ.get(_env(i, "address"), "").strip()
        if not address:
            raise ProviderSecretMissing(kind, conn_id, secret, _env(i, "address"))
        username = environ.get(_env(i, "username")) or None
        password = environ.get(_env(i, "password")) or None
        token = environ.get(_env(i, "token")) or None
        headers = (
            auth_header(username, password) if username and password else auth_header(None, token)
        )
        cls = PrometheusProvider if kind == "prometheus" else HttpCheckProvider
        out[(kind, conn_id)] = cls(base_url(address), headers)
    return out


__all__ = ["ENV_PREFIX", "SecretEnv", "providers_from_env", "secret_env"]
