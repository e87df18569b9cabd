from __future__ import annotations

import json

from convoy.policy.schema import SCHEMA_ID, json_schema, render_json_schema


def test_schema_header() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"].startswith("convoy UpgradePolicy")


def test_schema_uses_yaml_spelling_and_forbids_unknown_keys() -> None:
    schema = json_schema()
    assert {"apiVersion", "kind", "metadata", "services", "datastores"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    service = schema["$defs"]["Service"]
    assert "dependsOn" in service["properties"]
    assert "depends_on" not in service["properties"]


def test_schema_is_deterministic_and_json() -> None:
    assert render_json_schema() == render_json_schema()
    assert json.loads(render_json_schema()) == json_schema()


def test_schema_has_the_approval_section() -> None:
    schema = json_schema()
    assert "approval" in schema["properties"]
    approval = schema["$defs"]["ApprovalSettings"]
    assert set(approval["properties"]) == {"required", "approvers", "timeoutMinutes"}
    assert approval["properties"]["timeoutMinutes"]["minimum"] == 1
    assert approval["additionalProperties"] is False
