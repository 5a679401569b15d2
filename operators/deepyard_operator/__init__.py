"""deepyard's Kubernetes operator: thin kopf handlers that turn TrainJob and Sweep custom
resources into KubeRay RayJobs (`deepyard.k8s`) and mirror the RayJobs' progress back.

Run it with `kopf run --standalone --namespace=NS --module=deepyard_operator.handlers` (the
Helm chart does).
"""
