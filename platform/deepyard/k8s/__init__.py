"""Kubernetes: a validated spec → the TrainJob/Sweep custom resources users apply, and the
KubeRay RayJob the operator makes of them; the RayJob's status → the TrainJob's status.

Data flow: job.yaml (+ `kubernetes:` placement) → `placement.load_trainjob` → TrainJob
manifest (`kubectl apply`, `deepyard submit --k8s`, `deepyard k8s render`) → the operator
(operators/deepyard_operator) → `rayjob.build` → ConfigMap + RayJob (ray.io/v1) → KubeRay
runs `deepyard run job.yaml --address auto` on a RayCluster sized from the spec →
`status.from_rayjob` mirrors progress back into the TrainJob.

Everything here is a pure function of its inputs except `client`, the only module that
imports the kubernetes client.
"""

from __future__ import annotations

GROUP = "deepyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TRAINJOB = "TrainJob"
SWEEP = "Sweep"
PLURALS = {TRAINJOB: "trainjobs", SWEEP: "sweeps"}
