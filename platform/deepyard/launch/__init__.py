"""Where a spec runs. Data flow: cli → launch (embedded or existing Ray) → train on each rank.

`local.run_job` drives Ray core actors in a placement group (`workers.WorkerGroup`);
the Ray Jobs API and Kubernetes launchers come with their issues.
"""
