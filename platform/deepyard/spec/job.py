"""The job spec: what a user writes in job.yaml, validated once at the edge.

Every model forbids unknown keys, so a typo is an error that suggests the right key,
never a silently ignored setting. Cross-field rules live in `JobSpec` validators and
raise messages that name the field, the value and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from deepyard.spec.base import NOT_YET
from deepyard.spec.base import SpecModel as _Spec
from deepyard.spec.data import DataSpec, TokenizerSpec
from deepyard.spec.parallelism import ParallelismSpec, check_layout
from deepyard.spec.recovery import CheckpointSpec, FailureSpec, FaultSpec
from deepyard.spec.telemetry import TelemetrySpec
from deepyard.spec.window import check_task

__all__ = ["NOT_YET", "DataSpec", "JobSpec", "ParallelismSpec", "TokenizerSpec"]


class ModelSpec(_Spec):
    """Which registered model to build, and the arguments its builder takes."""

    name: str = Field(description="Registered model name; `deepyard models list` shows them.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the model builder."
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from deepyard.models import registry

        registry.get(name)
        return name

    @model_validator(mode="after")
    def _known_args(self) -> ModelSpec:
        from deepyard.models import registry

        registry.check(self.name, self.args)
        return self


class OptimizerSpec(_Spec):
    """The optimizer and its learning-rate schedule."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum.")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        default="cosine", description="Decay after warmup, down to min_lr_ratio x lr."
    )
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0, description="Max gradient norm; null: off.")


class TrainingSpec(_Spec):
    """How long to train, and how often to log and evaluate."""

    max_steps: PositiveInt | None = Field(default=None, description="Optimizer steps to run.")
    epochs: PositiveInt | None = Field(default=None, description="Passes over the training data.")
    gradient_accumulation: PositiveInt = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = Field(default=0, ge=0)
    log_every_steps: PositiveInt = 10
    eval_every_steps: PositiveInt | None = Field(
        default=None, description="Evaluate during training every N steps; always at the end."
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainingSpec:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set training.max_steps or training.epochs")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("training.max_steps and training.epochs are alternatives; keep one")
        return self


class ResourcesSpec(_Spec):
    """What each worker needs; the job gets all workers at once or waits."""

    num_workers: PositiveInt = 1
    cpus_per_worker: PositiveInt = 1
    gpus_per_worker: int = Field(default=0, ge=0)
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="How the gang is placed on nodes (a Ray placement group strategy): PACK "
        "fills as few nodes as possible, SPREAD puts workers on different nodes where it can; "
        "STRICT_ forms insist (one node; one worker per node).",
    )
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Other Ray resources each worker needs, by name, e.g. {TPU: 4} or a "
        "resource that marks a node kind ({a100_node: 1}); nodes declare them with "
        "`ray start --resources`.",
    )

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, custom: dict[str, float]) -> dict[str, float]:
        owned = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker"}
        for name, amount in custom.items():
            if name in owned:
                raise ValueError(f"resources.custom.{name}: set resources.{owned[name]} instead")
            if name in ("memory", "object_store_memory") or not name.strip():
                raise ValueError(
                    f"resources.custom has {name!r}, which is not a resource a worker can "
                    "reserve; name a resource the nodes declare with `ray start --resources`"
                )
            if amount <= 0:
                raise ValueError(
                    f"resources.custom.{name}={amount:g}: an amount must be above 0; "
                    "remove the entry if the workers do not need it"
                )
        return custom

    def per_worker(self) -> dict[str, float]:
        """One worker's Ray resources (its placement-group bundle)."""
        bundle = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            bundle["GPU"] = float(self.gpus_per_worker)
        return {**bundle, **{k: float(v) for k, v in self.custom.items()}}


class JobSpec(_Spec):
    """One training job: what to train, on what data, on how many workers."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Job name.")
    model: ModelSpec
    data: DataSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    training: TrainingSpec
    resources: ResourcesSpec = ResourcesSpec()
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="When deepyard jobs wait for the same cluster, higher priority starts "
        "first (ties: the one that waited longer). It orders waiting jobs; it never stops a "
        "running one.",
    )
    parallelism: ParallelismSpec = ParallelismSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    failure: FailureSpec = FailureSpec()
    faults: list[FaultSpec] = Field(
        default_factory=list, description="Injected faults, for chaos testing."
    )
    telemetry: TelemetrySpec = TelemetrySpec()
    output_dir: str = Field(default="runs", description="Runs are written under here.")
    deepspeed: dict[str, Any] = Field(
        default_factory=dict,
        description="DeepSpeed config entries that win over the ones deepyard derives.",
    )

    @model_validator(mode="after")
    def _model_takes_the_data(self) -> JobSpec:
        from deepyard.models import registry

        gives = "tokens" if self.data.text is not None else "features"
        takes = registry.get(self.model.name).inputs
        if gives != takes:
            wanted = [n for n in registry.names() if registry.get(n).inputs == gives]
            raise ValueError(
                f"model.name={self.model.name!r} takes {takes}, but the data gives {gives} "
                f"(data.text is {'set' if gives == 'tokens' else 'not set'}); use a model "
                f"that takes {gives}: {', '.join(wanted) or f'none is registered yet ({NOT_YET})'}"
            )
        check_task(self)
        return self

    @model_validator(mode="after")
    def _recovery_fits(self) -> JobSpec:
        for index, fault in enumerate(self.faults):
            if fault.rank >= self.resources.num_workers:
                raise ValueError(
                    f"faults[{index}].rank={fault.rank} is not a worker of "
                    f"resources.num_workers={self.resources.num_workers}; use 0 to "
                    f"{self.resources.num_workers - 1}"
                )
        best = self.checkpoint.keep_best
        if best is not None and best.metric not in self.task_metrics:
            raise ValueError(
                f"checkpoint.keep_best.metric={best.metric!r} is not reported for model "
                f"{self.model.name!r} ({self.task_name}); use one of: "
                f"{', '.join(self.task_metrics)}"
            )
        if best is not None and self.data.dataset is None and self.data.eval is None:
            raise ValueError(
                f"checkpoint.keep_best ranks checkpoints by the eval metric {best.metric!r}, "
                "but the job has no eval data; set data.eval or remove keep_best"
            )
        return self

    @property
    def task_name(self) -> str:
        """What the model is trained for (deepyard.tasks), from the model registry."""
        from deepyard.models import registry

        return registry.get(self.model.name).task

    @property
    def task_metrics(self) -> tuple[str, ...]:
        """The eval metrics this job's task reports."""
        from deepyard.tasks.catalog import info

        return info(self.task_name).metrics

    @property
    def checkpoint_uri(self) -> str | None:
        """Where checkpoints go; None when checkpointing is off."""
        if not self.checkpoint.enabled:
            return None
        return self.checkpoint.uri or f"{self.output_dir}/{self.name}/checkpoints"

    @model_validator(mode="after")
    def _batch_fits_workers(self) -> JobSpec:
        check_layout(self)
        replicas = self.data_parallel_size
        split = replicas * self.training.gradient_accumulation
        gbs = self.data.global_batch_size
        if gbs is not None and gbs % split:
            lower = max(split, gbs - gbs % split)
            raise ValueError(
                f"data.global_batch_size={gbs} is not divisible by {self._replicas_are} x "
                "training.gradient_accumulation "
                f"({self.training.gradient_accumulation}) = {split}; use {lower} or {lower + split}"
            )
        self._deepspeed_agrees()
        override = self.deepspeed.get("train_batch_size")
        if override is not None and override != self.global_batch_size:
            raise ValueError(
                f"deepspeed.train_batch_size={override} disagrees with data batch "
                f"{self.micro_batch_size} x gradient_accumulation "
                f"{self.training.gradient_accumulation} x {replicas} data-parallel replicas "
                f"= {self.global_batch_size}; remove it and set data.global_batch_size instead"
            )
        return self

    @property
    def _replicas_are(self) -> str:
        """The data-parallel replicas, as the spec's fields make them."""
        par, workers = self.parallelism, self.resources.num_workers
        if par.model_parallel == 1:
            return f"resources.num_workers ({workers})"
        return (
            f"the {self.data_parallel_size} data-parallel replicas (resources.num_workers "
            f"{workers} / (parallelism.pipeline {par.pipeline} x tensor {par.tensor}))"
        )

    @property
    def data_parallel_size(self) -> int:
        """Replicas of the model that each train on their own rows (ZeRO shards over them)."""
        return self.resources.num_workers // self.parallelism.model_parallel

    def _deepspeed_agrees(self) -> None:
        """`deepspeed:` may add settings, not contradict the spec's own fields."""
        zero = self.deepspeed.get("zero_optimization") or {}
        owned = [
            (
                "train_micro_batch_size_per_gpu",
                self.deepspeed.get("train_micro_batch_size_per_gpu"),
                self.micro_batch_size,
                "data.batch_size",
            ),
            (
                "gradient_accumulation_steps",
                self.deepspeed.get("gradient_accumulation_steps"),
                self.training.gradient_accumulation,
                "training.gradient_accumulation",
            ),
            (
                "zero_optimization.stage",
                zero.get("stage") if isinstance(zero, dict) else None,
                self.parallelism.zero_stage,
                "parallelism.zero_stage",
            ),
        ]
        for key, given, derived, field in owned:
            if given is not None and given != derived:
                raise ValueError(
                    f"deepspeed.{key}={given} contradicts {field}={derived}; "
                    f"remove it from the deepspeed block and set {field} instead"
                )
        pipe = self.deepspeed.get("pipeline") or {}
        par = self.parallelism
        for key in ("pipe_partitioned", "grad_partitioned"):
            if par.pipeline > 1 and par.tensor > 1 and isinstance(pipe, dict) and pipe.get(key):
                raise ValueError(
                    f"deepspeed.pipeline.{key}=true with parallelism.pipeline {par.pipeline} "
                    f"x tensor {par.tensor}: deepyard sends whole activations between "
                    "stages, since DeepSpeed's partitioned sends keep the first "
                    "micro-batch's shapes and batches vary in length "
                    "(train/stage_tensor.py); remove it from the deepspeed block"
                )

    @property
    def micro_batch_size(self) -> int:
        if self.data.batch_size is not None:
            return self.data.batch_size
        assert self.data.global_batch_size is not None
        split = self.data_parallel_size * self.training.gradient_accumulation
        return self.data.global_batch_size // split

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step: micro-batch x accumulation x data-parallel replicas
        (the ranks of one pipeline or tensor-parallel group read the same rows)."""
        return self.micro_batch_size * self.training.gradient_accumulation * self.data_parallel_size
