"""JSON Schema of the policy format, for editors (yaml-language-server) and CI."""

from __future__ import annotations

import json
from typing import Any

from convoy.policy.models import Policy

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:convoy:schema:upgrade-policy:v1"
TITLE = "convoy UpgradePolicy (convoy/v1)"


def json_schema() -> dict[str, Any]:
    """The schema as a dict, keyed by the YAML (camelCase) field names."""
    body = Policy.model_json_schema(by_alias=True, mode="validation")
    body.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, "title": TITLE, **body}


def render_json_schema() -> str:
    """The schema as stable text (sorted keys), so regenerating it gives no diff."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
