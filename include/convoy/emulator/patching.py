"""The three PATCH flavours the API server accepts, on plain JSON documents.

- :func:`strategic_merge` — ``application/strategic-merge-patch+json``: maps are
  merged recursively, ``null`` deletes a key, and lists with a *patch merge key*
  (``containers`` by ``name``, ``ports`` by ``containerPort``...) are merged item
  by item like the real server does; other lists are replaced. ``$patch: delete``
  on a list item removes it, ``$patch: replace`` on a map replaces it.
- :func:`merge_patch` — RFC 7386 ``application/merge-patch+json``: lists replaced.
- :func:`json_patch` — RFC 6902 ``application/json-patch+json``: add, remove,
  replace, test.
"""

from __future__ import annotations

import copy
from typing import Any

#: Patch merge keys of the lists inside workload objects (from the Kubernetes
#: OpenAPI ``x-kubernetes-patch-merge-key``).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
}


class PatchError(ValueError):
    """The patch document cannot be applied."""


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a strategic-merge patch to ``original`` (not modified) and return the result."""
    return _smp(copy.deepcopy(original), patch, field="")


def _smp(target: Any, patch: Any, field: str) -> Any:
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            elif isinstance(value, list) and key in MERGE_KEYS:
                result[key] = _merge_list(result.get(key), value, MERGE_KEYS[key], key)
            else:
                result[key] = _smp(result.get(key), value, key)
        return result
    return copy.deepcopy(patch)


def _merge_list(target: Any, patch: list[Any], merge_key: str, field: str) -> list[Any]:
    merged: list[Any] = list(target) if isinstance(target, list) else []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(
                f"list {field!r} items must be objects with the merge key {merge_key!r}"
            )
        index = next(
            (
                i
                for i, cur in enumerate(merged)
                if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
            continue
        if index is None:
            merged.append(_smp({}, item, field))
        else:
            merged[index] = _smp(merged[index], item, field)
    return merged


def merge_patch(original: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch to ``original`` (not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(original: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, test) to ``original``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(original)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        doc = _apply_op(doc, op)
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    parts = _pointer(str(op["path"]))
    kind = op["op"]
    if not parts:
        if kind in ("add", "replace"):
            return copy.deepcopy(op.get("value"))
        raise PatchError(f"unsupported operation {kind!r} on the document root")
    parent: Any = doc
    for part in parts[:-1]:
        parent = _child(parent, part, str(op["path"]))
    last = parts[-1]
    if kind == "test":
        if _child(parent, last, str(op["path"])) != op.get("value"):
            raise PatchError(f"test operation failed at {op['path']!r}")
    elif kind == "remove":
        _child(parent, last, str(op["path"]))
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    elif kind in ("add", "replace"):
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            if kind == "add" and last == "-":
                parent.append(value)
            elif kind == "add":
                parent.insert(int(last), value)
            else:
                _child(parent, last, str(op["path"]))
                parent[int(last)] = value
        elif isinstance(parent, dict):
            if kind == "replace":
                _child(parent, last, str(op["path"]))
            parent[last] = value
        else:
            raise PatchError(f"cannot {kind} at {op['path']!r}")
    else:
        raise PatchError(f"unsupported JSON patch operation {kind!r}")
    return doc


def _child(node: Any, part: str, path: str) -> Any:
    try:
        if isinstance(node, list):
            return node[int(part)]
        if isinstance(node, dict):
            return node[part]
    except (KeyError, IndexError, ValueError):
        pass
    raise PatchError(f"path {path!r} does not exist")
