"""`deepyard k8s render | crds`: the Kubernetes objects of a spec, printed without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from deepyard.cli.errors import err_console, user_errors

app = typer.Typer(
    help="Kubernetes: render TrainJob/Sweep resources and the RayJobs the operator makes.",
    no_args_is_help=True,
)
ImageOption = typer.Option(
    None, "--image", envvar="DEEPYARD_IMAGE", help="Container image with deepyard installed."
)
NamespaceOption = typer.Option(None, "--namespace", "-n", help="Namespace of the job.")
QueueOption = typer.Option(None, "--queue", help="Kueue LocalQueue (kueue.x-k8s.io/queue-name).")
PriorityOption = typer.Option(None, "--priority-class", help="PriorityClass of the pods.")
SetOption = typer.Option(
    [], "--set", help="Override a field by dotted path, e.g. --set kubernetes.shm_size=8Gi."
)


def placement(
    image: str | None, namespace: str | None, queue: str | None, priority_class: str | None
) -> dict[str, Any]:
    given = {
        "image": image,
        "namespace": namespace,
        "queue_name": queue,
        "priority_class": priority_class,
    }
    return {key: value for key, value in given.items() if value is not None}


@app.command("render")
def render(
    file: Path = typer.Argument(..., help="A job or sweep spec, or a TrainJob/Sweep manifest."),
    overrides: list[str] = SetOption,
    image: str | None = ImageOption,
    namespace: str | None = NamespaceOption,
    queue: str | None = QueueOption,
    priority_class: str | None = PriorityOption,
) -> None:
    """Print the TrainJob (or Sweep), and the ConfigMap and KubeRay RayJob the operator
    would make of it, as YAML: for review and GitOps. Needs no cluster."""
    from deepyard.k8s import render as rendering

    with user_errors():
        objects = rendering.render(
            file, overrides, placement(image, namespace, queue, priority_class)
        )
    err_console.print(
        f"rendered {objects[0]['kind']} {objects[0]['metadata']['name']} and what the "
        "operator makes of it (owner references are added on the cluster)"
    )
    print(rendering.dump_all(objects), end="")


@app.command("crds")
def crds() -> None:
    """Print the TrainJob and Sweep CustomResourceDefinitions (generated from the specs)."""
    from deepyard.k8s import SWEEP, TRAINJOB, crd
    from deepyard.k8s.render import dump_all

    print(dump_all([crd.definition(TRAINJOB), crd.definition(SWEEP)]), end="")
