"""charts/flywheel's values.yaml and values.schema.json agree and follow the house rules (no cluster needed)."""

from __future__ import annotations

import json
import re

import yaml

from chart_fixtures import CHART

VALUES = CHART / "values.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./-]+):(?:\s|$)")


def _designed_keys() -> list[tuple[int, tuple[str, ...]]]:
    """(line number, path) of every values.yaml key the chart defines, i.e. reached only through schema
    `properties`; entries of free-form maps (resources, nodeSelector, tolerations) are data, not keys."""
    found, stack = [], []
    for number, line in enumerate(VALUES.read_text().splitlines()):
        m = KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        depth = len(m["indent"]) // 2
        stack[depth:] = [m["key"]]
        node, designed = SCHEMA, True
        for part in stack:
            if part in node.get("properties", {}):
                node = node["properties"][part]
            else:
                designed = False
                break
        if designed:
            found.append((number, tuple(stack)))
    return found


def _objects(node: dict, path: str = "$"):
    if node.get("type") == "object" or "properties" in node:
        yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _objects(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _objects(node["additionalProperties"], f"{path}.*")


def test_every_values_key_has_a_comment_starting_with_its_name():
    lines = VALUES.read_text().splitlines()
    missing = []
    for number, path in _designed_keys():
        start = number
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1  # the comment block may run over several lines; its first line names the key
        first = lines[start].strip() if start < number else ""
        if not re.match(rf"# {re.escape(path[-1])}\b", first):
            missing.append(".".join(path))
    assert not missing, f"keys without a '# <key> ...' comment starting the comment block above them: {missing}"


def test_every_values_key_is_in_the_schema():
    def walk(values: dict, node: dict, path: str):
        for key, value in values.items():
            props = node.get("properties", {})
            if key in props:
                if isinstance(value, dict):
                    walk(value, props[key], f"{path}.{key}")
            else:
                assert isinstance(node.get("additionalProperties"), dict), f"{path}.{key} is not in the schema"

    walk(yaml.safe_load(VALUES.read_text()), SCHEMA, "$")


def test_every_schema_object_with_fixed_keys_refuses_unknown_ones():
    loose = [path for path, node in _objects(SCHEMA)
             if "properties" in node and node.get("additionalProperties") is not False]
    assert not loose, f"objects that accept unknown keys: {loose}"


def test_values_use_camel_case_keys_and_maps_not_lists():
    def walk(value, path):
        if isinstance(value, list):
            raise AssertionError(f"{path} is a list; use a map keyed by name")
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}")

    values = yaml.safe_load(VALUES.read_text())
    walk(values, "$")
    for _, path in _designed_keys():
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", path[-1]), f"{'.'.join(path)} is not camelCase"
