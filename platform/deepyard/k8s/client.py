"""The one place deepyard talks to a Kubernetes API server (the official `kubernetes` client):
create the objects `rayjob.build` made, patch a resource's status, delete what a job owns.

Used by `deepyard submit --k8s` (kubeconfig) and by the operator (in-cluster config, or
`DEEPYARD_K8S_HOST` in tests). API errors become DeepyardErrors that say what to fix.
"""

from __future__ import annotations

import os
from typing import Any

from deepyard.errors import DeepyardError
from deepyard.k8s import PLURALS

RAY_PLURALS = {"RayJob": "rayjobs", "RayCluster": "rayclusters"}


class KubernetesError(DeepyardError):
    """The API server refused a request, or cannot be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _plural(kind: str) -> str:
    plurals = {**PLURALS, **RAY_PLURALS}
    if kind not in plurals:
        raise ValueError(f"no plural known for kind {kind}")
    return plurals[kind]


class Cluster:
    """A connection to one API server."""

    def __init__(self, host: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        host = host or os.environ.get("DEEPYARD_K8S_HOST")
        self.namespace = "default"  # the context's namespace, for objects that name none
        if host:
            configuration = client.Configuration()
            configuration.host = host
            api_client = client.ApiClient(configuration)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    path = os.environ.get("KUBECONFIG")  # read now, not at import time
                    config.load_kube_config(config_file=path, context=context)
                    contexts, active = config.list_kube_config_contexts(config_file=path)
                    chosen = next((c for c in contexts if c["name"] == context), active)
                    self.namespace = chosen.get("context", {}).get("namespace") or "default"
                except (config.ConfigException, OSError) as exc:
                    raise KubernetesError(
                        f"no Kubernetes cluster configured ({exc}); set KUBECONFIG or "
                        "`kubectl config use-context` to the cluster to submit to"
                    ) from None
            api_client = client.ApiClient()
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def create(self, obj: dict[str, Any], exist_ok: bool = True) -> dict[str, Any]:
        """Create `obj`; with `exist_ok`, an object of that name already there is kept."""
        meta = obj["metadata"]
        meta.setdefault("namespace", self.namespace)
        try:
            return self._call("create", obj, meta["namespace"], body=obj)
        except KubernetesError as exc:
            if exc.status == 409 and exist_ok:
                return self.get(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"])
            raise

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        probe = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
        return self._call("get", probe, namespace, name=name)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        """Delete one object (its dependents go with it); False when it was already gone."""
        probe = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
        try:
            self._call("delete", probe, namespace, name=name)
        except KubernetesError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict):
        group, version = api_version.split("/")
        try:
            return self.custom.patch_namespaced_custom_object_status(
                group, version, namespace, _plural(kind), name, {"status": status}
            )
        except Exception as exc:
            raise _error(exc, f"patch the status of {kind} {namespace}/{name}") from None

    def _call(self, verb: str, obj: dict[str, Any], namespace: str, **kwargs: Any) -> Any:
        kind, api_version = obj["kind"], obj["apiVersion"]
        what = f"{verb} {kind} {namespace}/{obj['metadata']['name']}"
        try:
            if api_version == "v1" and kind == "ConfigMap":
                core_verb = "read" if verb == "get" else verb
                method = getattr(self.core, f"{core_verb}_namespaced_config_map")
                result = method(namespace=namespace, **kwargs)
                return self.core.api_client.sanitize_for_serialization(result)
            group, version = api_version.split("/")
            method = getattr(self.custom, f"{verb}_namespaced_custom_object")
            return method(group, version, namespace, _plural(kind), **kwargs)
        except Exception as exc:
            raise _error(exc, what) from None


def _error(exc: Exception, what: str) -> KubernetesError:
    import json

    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        return KubernetesError(f"cannot {what}: {message}", exc.status)
    return KubernetesError(f"cannot {what}: {exc}; check that the cluster is reachable")
