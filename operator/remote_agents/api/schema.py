"""Turn a pydantic model's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes wants every type spelled out in place: no `$ref`, no `anyOf` for optionals, no
`title`, no `default: null`. CEL rules and other `x-kubernetes-*` keys pass through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_KEPT_KEYS = {
    "type", "description", "default", "enum", "format", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
    "maxProperties", "nullable",
}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _convert(raw, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = _convert(definitions[node["$ref"].rsplit("/", 1)[1]], definitions)
        return {**target, **_convert({k: v for k, v in node.items() if k != "$ref"}, definitions)}
    if "anyOf" in node:
        return _convert_any_of(node, definitions)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEPT_KEYS or key.startswith("x-kubernetes-"):
            result[key] = value
    if result.get("default", 0) is None:
        del result["default"]
    if "properties" in node:
        result["properties"] = {name: _convert(child, definitions) for name, child in node["properties"].items()}
        result["type"] = "object"
    if node.get("required"):
        result["required"] = sorted(node["required"])
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = _convert(node["additionalProperties"], definitions)
    if "items" in node:
        result["items"] = _convert(node["items"], definitions)
    return result


def _convert_any_of(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    options = [option for option in node["anyOf"] if option.get("type") != "null"]
    outer = _convert({k: v for k, v in node.items() if k != "anyOf"}, definitions)
    if len(options) == 1:
        return {**_convert(options[0], definitions), **outer}
    if {option.get("type") for option in options} == {"integer", "string"}:
        merged = {**outer, "x-kubernetes-int-or-string": True}
        merged.pop("type", None)
        return merged
    raise ValueError(f"cannot express anyOf {node['anyOf']} as a structural schema")
