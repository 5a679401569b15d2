"""Check a custom resource the way the API server does, without one: the CRD's
`openAPIV3Schema` (with jsonschema) and its `x-kubernetes-validations` CEL rules (with
cel-python, `celpy`). Unknown fields are errors, as with `kubectl apply` (strict field
validation, kubectl's default since 1.25). Transition rules (`oldSelf`) run only on an
update (`problems(obj, crd, old=...)`), and only where the old object has a value at the
rule's place, as the API server does; on create they are skipped.

Used by the tests (KubeRay's RayJob CRD, our own TrainJob/Sweep CRDs); needs the dev extra.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def load_crd(path: str | Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # KubeRay's CRDs are 1-2 MB
    return dict(yaml.load(Path(path).read_text(), Loader=loader))


def version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return dict(entry["schema"]["openAPIV3Schema"])
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


NO_OLD = object()  # no old value at this place: transition rules do not run


def problems(
    obj: dict[str, Any],
    crd: dict[str, Any],
    version: str | None = None,
    old: dict[str, Any] | None = None,
) -> list[str]:
    """Every reason the API server would refuse `obj` on create (or, with `old`, as an
    update of `old`), as `path: message`."""
    version = version or obj["apiVersion"].rsplit("/", 1)[-1]
    schema = version_schema(crd, version)
    obj = prune_nulls(obj, schema)
    found = [f"{_path(e.absolute_path)}: {e.message}" for e in _schema_errors(obj, schema)]
    if found:  # the API server runs CEL only on a value that passed the schema
        return found
    previous = NO_OLD if old is None else prune_nulls(old, schema)
    return [f"{path}: {message}" for path, message in cel_failures(obj, schema, "", previous)]


def prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """The API server drops a null that its field's schema does not declare `nullable`."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        kept = {}
        for name, child in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else {})
            if child is None and not sub.get("nullable") and sub:
                continue
            kept[name] = prune_nulls(child, sub)
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(child, schema["items"]) for child in value]
    return value


def _schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> Iterator[Any]:
    import jsonschema

    strict = _to_json_schema(copy.deepcopy(schema))
    validator = jsonschema.Draft4Validator(strict)
    yield from sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))


def _to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (Kubernetes flavour) → JSON Schema draft 4, with unknown fields refused."""
    node.pop("x-kubernetes-validations", None)
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    for key in ("properties", "patternProperties"):
        for child in node.get(key, {}).values():
            _to_json_schema(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _to_json_schema(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            _to_json_schema(child)
    if node.get("format") in ("int32", "int64", "double", "float", "byte", "date-time"):
        node.pop("format")
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        node["additionalProperties"] = False
    if node.get("x-kubernetes-embedded-resource"):
        node.pop("additionalProperties", None)
    return node


def cel_failures(
    value: Any, schema: dict[str, Any], path: str = "", old: Any = NO_OLD
) -> list[tuple[str, str]]:
    """Evaluate every CEL rule along `value`, depth first; (path, message) of each failure.
    Transition rules (`oldSelf`) run where `old` has a value."""
    failures: list[tuple[str, str]] = []
    if value is None:
        return failures
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and (old is NO_OLD or old is None):
            continue
        previous = old if transition else NO_OLD
        if not evaluate(rule["rule"], value, previous):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            if "messageExpression" in rule:
                message = str(evaluate(rule["messageExpression"], value, previous))
            failures.append((path or "<root>", message))
    if isinstance(value, dict):
        for name, child in value.items():
            sub = schema.get("properties", {}).get(name)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            before = old.get(name, NO_OLD) if isinstance(old, dict) else NO_OLD
            if sub is not None:
                failures += cel_failures(child, sub, f"{path}.{name}" if path else name, before)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):  # atomic lists: items have no old value
            failures += cel_failures(child, schema["items"], f"{path}[{index}]")
    return failures


_PROGRAMS: dict[str, Any] = {}


def evaluate(expression: str, value: Any, old: Any = NO_OLD) -> Any:
    """One CEL expression with `self` bound to `value` and, for a transition rule, `oldSelf`
    to `old` (compiled once, cached)."""
    import celpy

    program = _PROGRAMS.get(expression)
    if program is None:
        env = celpy.Environment()
        program = env.program(env.compile(expression), functions={"format": cel_format})
        _PROGRAMS[expression] = program
    bound = {"self": celpy.json_to_cel(value)}
    if old is not NO_OLD:
        bound["oldSelf"] = celpy.json_to_cel(old)
    result = program.evaluate(bound)
    if isinstance(result, Exception):
        raise result
    return result


def cel_format(template: Any, args: Any) -> Any:
    """Kubernetes' `'...'.format([...])` (cel-go's strings extension), which cel-python
    lacks: %d for integers, %s for strings and numbers (a double as CEL's string() writes
    it), %% for a percent sign. The list must hold one type, as the API server's literal
    check requires."""
    import celpy

    kinds = {type(a).__name__ for a in args}
    if len(kinds) > 1:
        raise ValueError(f"format() of a mixed list ({sorted(kinds)}): the API server refuses it")
    values = iter(args)
    out, i = [], 0
    while i < len(template):
        if template[i] != "%":
            out.append(template[i])
            i += 1
            continue
        clause = template[i + 1 : i + 2]
        if clause == "%":
            out.append("%")
        elif clause == "d":
            value = next(values)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"format(): %d needs an integer, got {value!r}")
            out.append(str(int(value)))
        elif clause == "s":
            value = next(values)
            out.append(_go_float(value) if isinstance(value, float) else str(value))
        else:
            raise ValueError(f"format(): clause %{clause} is not supported here")
        i += 2
    if next(values, None) is not None:
        raise ValueError(f"format(): more arguments than clauses in {template!r}")
    return celpy.celtypes.StringType("".join(out))


def _go_float(value: float) -> str:
    """A double as cel-go's string() writes it (Go's shortest form: 0, -1.5, 1e+21)."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"
