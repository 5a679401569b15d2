"""The `parallelism:` section: how the job's workers split the work.

Every worker is one rank. Ranks form a grid of data x pipeline x tensor: `pipeline`
ranks each hold a slice of the model's layers (DeepSpeed's PipelineModule), `tensor`
ranks each hold a slice of every layer's weights (DeepSpeed AutoTP; inside each pipeline
stage when both are > 1, deepyard.train.stage_tensor), and the `data`
replicas of that arrangement each train on their own rows, with ZeRO sharding the
optimizer state among them. The product must be resources.num_workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt, model_validator

from deepyard.spec.base import SpecModel as _Spec

if TYPE_CHECKING:
    from deepyard.spec.job import JobSpec


class ParallelismSpec(_Spec):
    """DeepSpeed ZeRO data parallelism, pipeline stages and tensor parallelism."""

    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO stage 0, 1, 2 or 3.")
    offload_optimizer: Literal["none", "cpu"] = "none"
    offload_params: Literal["none", "cpu"] = Field(
        default="none", description="Parameter offload; ZeRO stage 3 only."
    )
    data: PositiveInt | None = Field(
        default=None,
        description="Data-parallel replicas; default: resources.num_workers / (pipeline x "
        "tensor). data x pipeline x tensor must equal resources.num_workers.",
    )
    pipeline: PositiveInt = Field(
        default=1,
        description="Pipeline stages: the model's layers are cut into this many consecutive "
        "stages, one per worker, fed micro-batch by micro-batch (training."
        "gradient_accumulation micro-batches per step; use at least as many as stages).",
    )
    pipeline_partition: Literal["parameters", "layers", "compute"] = Field(
        default="parameters",
        description="How layers are cut into stages: balanced by parameter count, by "
        "layer count, or by forward FLOPs (compute: each layer's matmul and convolution "
        "FLOPs for a sample of the data's shape, counted on the meta device).",
    )
    tensor: PositiveInt = Field(
        default=1,
        description="Tensor-parallel degree: every attention and MLP weight is split over "
        "this many workers of one node (models with a tensor-parallel plan: gpt). Alone, "
        "through DeepSpeed AutoTP; with pipeline > 1, inside each stage (each stage's "
        "weights split over `tensor` workers; ZeRO stage 0 or 1).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParallelismSpec:
        if self.offload_params != "none" and self.zero_stage != 3:
            raise ValueError(
                f"parallelism.offload_params={self.offload_params} needs zero_stage 3 "
                f"(got {self.zero_stage}); set parallelism.zero_stage: 3 or offload_params: none"
            )
        if self.offload_optimizer != "none" and self.zero_stage == 0:
            raise ValueError(
                "parallelism.offload_optimizer needs zero_stage 1, 2 or 3; "
                "set parallelism.zero_stage: 2"
            )
        if self.pipeline > 1 and self.zero_stage > 1:
            raise ValueError(
                f"parallelism.zero_stage={self.zero_stage} with pipeline={self.pipeline}: "
                "DeepSpeed's pipeline engine shards optimizer state only (ZeRO stage 0 or 1); "
                "set zero_stage: 1"
            )
        if self.tensor > 1 and self.zero_stage > 2:
            raise ValueError(
                f"parallelism.zero_stage={self.zero_stage} with tensor={self.tensor}: "
                "DeepSpeed's AutoTP training runs with ZeRO stage 0, 1 or 2; set zero_stage: 2"
            )
        return self

    @property
    def model_parallel(self) -> int:
        """Ranks that hold one copy of the model between them."""
        return self.pipeline * self.tensor


def check_layout(job: JobSpec) -> None:
    """data x pipeline x tensor = resources.num_workers, and the model can be cut so."""
    par, workers = job.parallelism, job.resources.num_workers
    # The layouts come first: what follows them is the whole message the CRD's CEL rule
    # gives (k8s/rules.py), which cannot enumerate them.
    layouts = f"parallelism: {workers} workers can be laid out as {_choices(workers)}; "
    fix = f"or parallelism to a layout of {workers} workers"
    if par.data is not None and par.data * par.model_parallel != workers:
        raise ValueError(
            f"{layouts}parallelism.data {par.data} x pipeline {par.pipeline} x tensor "
            f"{par.tensor} = {par.data * par.model_parallel} workers, but "
            f"resources.num_workers={workers}; set num_workers: "
            f"{par.data * par.model_parallel}, {fix}"
        )
    if workers % par.model_parallel:
        raise ValueError(
            f"{layouts}parallelism.pipeline {par.pipeline} x tensor {par.tensor} = "
            f"{par.model_parallel} does not divide resources.num_workers={workers}; set "
            f"num_workers: {(workers // par.model_parallel + 1) * par.model_parallel}, {fix}"
        )
    if par.pipeline > 1:
        _check_pipeline(job)
    if par.tensor > 1:
        _check_tensor(job)


def _choices(workers: int) -> str:
    """Every data x pipeline x tensor layout of `workers` ranks, as the spec spells it."""
    layouts = [
        f"{{data: {workers // (p * t)}, pipeline: {p}, tensor: {t}}}"
        for p in range(1, workers + 1)
        for t in range(1, workers + 1)
        if workers % (p * t) == 0
    ]
    return ", ".join(layouts)


def _check_pipeline(job: JobSpec) -> None:
    from deepyard.models import registry
    from deepyard.tasks.catalog import info

    name, stages = job.model.name, job.parallelism.pipeline
    if not info(job.task_name).pipeline:
        raise ValueError(
            f"parallelism.pipeline={stages}: model {name!r} trains as a "
            f"{job.task_name} task, which runs several engines and cannot be cut into "
            "pipeline stages; set pipeline: 1"
        )
    layers = registry.pipeline_layers(name, job.model.args)
    if layers is None:
        staged = [n for n in registry.names() if registry.get(n).pipeline]
        raise ValueError(
            f"parallelism.pipeline={stages}: model {name!r} does not expose its layers as a "
            f"sequence; set pipeline: 1, or use a model that does: {', '.join(staged)}"
        )
    if layers < stages:
        raise ValueError(
            f"parallelism.pipeline={stages}: model {name!r} with these model.args has "
            f"{layers} layers to cut, fewer than the stages; use pipeline: {layers} or less, "
            "or a deeper model"
        )


def _check_tensor(job: JobSpec) -> None:
    from deepyard.train import tensor_parallel

    par = job.parallelism
    tensor_parallel.check(job.model.name, job.model.args, par.tensor)
