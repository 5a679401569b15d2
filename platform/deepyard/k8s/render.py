"""A spec file → the custom resource users apply, and what the operator would make of it.

`deepyard k8s render` prints these without any cluster (for review and GitOps); `deepyard
submit --k8s` creates the first one. Owner references need the live object's uid, so a
rendered ConfigMap and RayJob have none; the operator adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deepyard.k8s import API_VERSION, SWEEP, TRAINJOB
from deepyard.k8s.kueue import WorkloadClass
from deepyard.k8s.rayjob import Owner


def is_sweep(path: Path) -> bool:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # the loader reports it properly
    if not isinstance(raw, dict):
        return False
    return raw.get("kind") == SWEEP or ("space" in raw and "kind" not in raw)


def resource(
    path: str | Path, overrides: Sequence[str] = (), placement: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The TrainJob or Sweep manifest for a job/sweep spec file (or a manifest itself)."""
    path = Path(path)
    if is_sweep(path):
        from deepyard.k8s.sweep import load_sweep_resource

        spec: Any
        spec, metadata = load_sweep_resource(path, overrides, placement)
        kind = SWEEP
    else:
        from deepyard.k8s.placement import load_trainjob

        spec, metadata = load_trainjob(path, overrides, placement)
        kind = TRAINJOB
    meta = {k: v for k, v in metadata.items() if k in ("labels", "annotations")}
    meta = {"name": spec.name, **meta}
    namespace = spec.kubernetes.namespace or metadata.get("namespace")
    if namespace:  # else the namespace of whoever applies it (kubectl's context)
        meta["namespace"] = namespace
    body = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": body}


def generated(
    manifest: dict[str, Any],
    uid: str | None = None,
    image: str | None = None,
    classes: Sequence[WorkloadClass] = (),
) -> list[dict[str, Any]]:
    """The ConfigMap and RayJob the operator makes for a TrainJob or Sweep manifest
    (`classes`: the operator's Kueue WorkloadPriorityClasses, `kueue.classes_from_env`)."""
    from deepyard.k8s.placement import validate_trainjob

    meta = manifest["metadata"]
    owner = Owner(meta["name"], meta.get("namespace") or "default", uid, manifest["kind"])
    if manifest["kind"] == SWEEP:
        from deepyard.k8s.sweep import SweepJobSpec, build_sweep

        return build_sweep(SweepJobSpec.model_validate(manifest["spec"]), owner, image, classes)
    from deepyard.k8s.rayjob import build

    spec = validate_trainjob(manifest["spec"], f"TrainJob {meta['name']}")
    return build(spec, owner, image, classes)


def render(
    path: str | Path,
    overrides: Sequence[str] = (),
    placement: dict[str, Any] | None = None,
    image: str | None = None,
    classes: Sequence[WorkloadClass] = (),
) -> list[dict[str, Any]]:
    manifest = resource(path, overrides, placement)
    return [manifest, *generated(manifest, None, image, classes)]


def dump_all(objects: Sequence[dict[str, Any]]) -> str:
    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objects, Dumper=_NoAliases, sort_keys=False)
