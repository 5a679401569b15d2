"""The TrainJob and Sweep CustomResourceDefinitions, generated from the pydantic specs.

The spec models are the one schema source: their JSON Schema becomes a structural OpenAPI
v3 schema (references inlined, `null` unions made `nullable` where null means something,
free-form blocks `x-kubernetes-preserve-unknown-fields`), and the cross-field rules the
pydantic validators enforce are repeated as CEL `x-kubernetes-validations` with the very
messages the CLI prints (`rules.py`; a test checks each against pydantic). So
`kubectl apply` of an invalid TrainJob fails with the message `deepyard run` gives.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from deepyard.k8s import GROUP, PLURALS, SWEEP, TRAINJOB, VERSION
from deepyard.k8s.rules import MAX_FAULTS, SWEEP_RULES, TRAINJOB_RULES, Rules, merge

DROPPED = ("title", "default", "examples", "discriminator")


def openapi(model: type[BaseModel], rules: Rules) -> dict[str, Any]:
    """A structural OpenAPI v3 schema of `model`, with CEL rules attached by field path."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    out = _convert(schema, defs)
    _bound(out)
    for path, entries in rules.items():
        node = out
        for part in path:
            node = node["properties"][part]
            node = node.get("items", node) if part.endswith("[]") else node
        node.setdefault("x-kubernetes-validations", []).extend(copy.deepcopy(entries))
    return out


def _bound(schema: dict[str, Any]) -> None:
    """Sizes the API server's CEL cost estimate needs (unbounded strings and maps make every
    rule that reads them look expensive); all far above what a job spec uses."""
    props = schema["properties"]
    props["name"]["maxLength"] = 63
    for section, field in (("resources", "custom"), ("kubernetes", "node_selector")):
        if section in props and field in props[section]["properties"]:
            props[section]["properties"][field]["maxProperties"] = 32
    for section, field in (("model", "name"), ("data", "dataset"), ("data", "engine")):
        if section in props:  # compared with the registries' names (rules_registry)
            props[section]["properties"][field]["maxLength"] = 63
    if "checkpoint" in props:
        props["checkpoint"]["properties"]["uri"]["maxLength"] = 4096
    if "faults" in props:  # the fault-rank rule looks at each fault (rules.MAX_FAULTS)
        props["faults"]["maxItems"] = MAX_FAULTS
    if "job" in props:  # a Sweep: the same bounds on its base job
        _bound(props["job"])


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _convert({**target, **extra}, defs)
    options = node.get("anyOf") or node.get("oneOf")
    if options is not None:
        return _union(node, options, defs)
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in DROPPED}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in out and not isinstance(out[bound], bool):
            out[bound.replace("exclusiveM", "m")] = out[bound]
            out[bound] = True
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _convert(v, defs) for k, v in out["properties"].items()}
        out.pop("additionalProperties", None)
    elif out.get("type") == "object" or "additionalProperties" in out:
        out["type"] = "object"
        values = out.pop("additionalProperties", True)
        if values is True or values == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = _convert(values, defs)
    if out.get("type") == "array":
        items = out.pop("prefixItems", None)
        out["items"] = _convert(items[0] if items else out.get("items", {}), defs)
    if not out.get("type") and not out.get("enum"):
        out["x-kubernetes-preserve-unknown-fields"] = True  # Any
    return out


def _union(node: dict[str, Any], options: list[dict], defs: dict[str, Any]) -> dict[str, Any]:
    """`X | None` is X (nullable when null differs from leaving the field out); any other
    union (the sweep's search-space entries) is kept free-form for pydantic to check."""
    kept = [o for o in options if o.get("type") != "null"]
    extra = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", *DROPPED)}
    if len(kept) == 1:
        out = _convert({**kept[0], **extra}, defs)
        if len(kept) < len(options) and node.get("default") is not None:
            out["nullable"] = True  # null switches something off (grad_clip: null)
        return out
    return {**extra, "x-kubernetes-preserve-unknown-fields": True}


def _printer_columns(kind: str) -> list[dict[str, Any]]:
    columns = [
        ("Phase", "string", ".status.phase", 0),
        ("Workers", "integer", ".spec.resources.num_workers", 0),
        ("GPUs/Worker", "integer", ".spec.resources.gpus_per_worker", 1),
        ("Queue", "string", ".spec.kubernetes.queue_name", 0),
        ("Attempts", "integer", ".status.attempts", 0),
        ("Step", "integer", ".status.metrics.step", 0),
        ("Checkpoint", "integer", ".status.lastCheckpointStep", 1),
        ("Reason", "string", ".status.reason", 1),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]
    if kind == SWEEP:
        columns = [
            ("Phase", "string", ".status.phase", 0),
            ("Trials", "integer", ".spec.budget.max_trials", 0),
            ("Running", "integer", ".status.metrics.trialsRunning", 0),
            ("Done", "integer", ".status.metrics.trialsDone", 0),
            ("Best", "number", ".status.metrics.bestMetric", 0),
            ("Queue", "string", ".spec.kubernetes.queue_name", 0),
            ("Attempts", "integer", ".status.attempts", 0),
            ("Reason", "string", ".status.reason", 1),
            ("Age", "date", ".metadata.creationTimestamp", 0),
        ]
    return [
        {"name": name, "type": type_, "jsonPath": path, **({"priority": 1} if wide else {})}
        for name, type_, path, wide in columns
    ]


def status_schema(kind: str = TRAINJOB) -> dict[str, Any]:
    """What the operator writes into `.status` (kopf keeps its own bookkeeping there too);
    `metrics` is the job's summary, or a Sweep's (status.summarize_sweep)."""
    text, integer, number = {"type": "string"}, {"type": "integer"}, {"type": "number"}
    metrics = {
        "step": integer,
        "loss": number,
        "samplesPerSecond": number,
        "checkpointsSaved": integer,
        "attempt": integer,
    }
    if kind == SWEEP:
        metrics = {
            "trialsRunning": integer,
            "trialsDone": integer,
            "trialsFailed": integer,
            "bestMetric": number,
            "metric": text,
        }
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": text,
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": text,
            "message": text,
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "phase": {
                "type": "string",
                "enum": ["Queued", "Starting", "Running", "Retrying", "Succeeded", "Failed"],
            },
            "reason": text,
            "message": text,
            "attempts": integer,
            "lastCheckpointStep": integer,
            "rayJobName": text,
            "rayClusterName": text,
            "dashboardURL": text,
            "startTime": text,
            "endTime": text,
            "observedSpecHash": text,
            "metrics": {"type": "object", "properties": metrics},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def definition(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of TrainJob or Sweep."""
    from deepyard.k8s.placement import TrainJobSpec
    from deepyard.k8s.rules_registry import registry_rules
    from deepyard.k8s.sweep import SweepJobSpec

    model: type[BaseModel] = TrainJobSpec if kind == TRAINJOB else SweepJobSpec
    named = registry_rules()
    if kind == TRAINJOB:
        rules = merge(TRAINJOB_RULES, named)
    else:  # a Sweep's base job sits under `.spec.job`
        rules = merge(SWEEP_RULES, {("job", *path): entries for path, entries in named.items()})
    plural = PLURALS[kind]
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi(model, rules),
            "status": status_schema(kind),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
                "shortNames": {TRAINJOB: ["tj"], SWEEP: ["dysweep"]}[kind],
                "categories": ["deepyard"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(kind),
                }
            ],
        },
    }
