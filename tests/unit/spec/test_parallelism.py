"""parallelism.data x pipeline x tensor: layouts that fit the workers and the model load
with the right batch arithmetic; every other one is one clear error naming the fix."""

from __future__ import annotations

import pytest

from deepyard.errors import SpecError
from deepyard.spec import load_text
from deepyard.testing.jobs import GPT_JOB as GPT


def gpt(workers: int, parallelism: str, args: str = "{size: tiny}") -> str:
    text = GPT.replace("{size: tiny}", args)
    return text + f"resources:\n  num_workers: {workers}\nparallelism:\n{parallelism}"


def feature_job(model: str, dataset: str, parallelism: str) -> str:
    """A 2-worker job of `model` on a packaged `dataset`, with these parallelism fields."""
    return f"""name: {model}
model: {{name: {model}}}
data: {{dataset: {dataset}, batch_size: 8}}
training: {{max_steps: 5}}
resources: {{num_workers: 2}}
parallelism: {{{parallelism}}}
"""


def error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_text(text, "job.yaml")
    return str(info.value)


def test_pipeline_stages_share_rows_so_the_global_batch_counts_replicas() -> None:
    spec = load_text(gpt(4, "  pipeline: 2\n"), "job.yaml")
    assert spec.data_parallel_size == 2
    assert spec.global_batch_size == 4 * 4 * 2  # micro x accumulation x replicas


def test_global_batch_size_splits_over_replicas_not_workers() -> None:
    text = gpt(4, "  pipeline: 2\n").replace("batch_size: 4", "global_batch_size: 32")
    spec = load_text(text, "job.yaml")
    assert spec.micro_batch_size == 4  # 32 / (2 replicas x 4 accumulation)


def test_explicit_data_must_complete_the_product() -> None:
    message = error(gpt(4, "  data: 4\n  pipeline: 2\n"))
    assert "data 4 x pipeline 2 x tensor 1 = 8 workers, but resources.num_workers=4" in message
    assert "set num_workers: 8" in message
    assert "{data: 2, pipeline: 2, tensor: 1}" in message


def test_stages_that_do_not_divide_the_workers_list_the_valid_layouts() -> None:
    message = error(gpt(3, "  pipeline: 2\n"))
    assert "pipeline 2 x tensor 1 = 2 does not divide resources.num_workers=3" in message
    for layout in ("{data: 3, pipeline: 1, tensor: 1}", "{data: 1, pipeline: 3, tensor: 1}"):
        assert layout in message


def test_pipeline_refuses_zero_2_with_the_stage_that_works() -> None:
    message = error(gpt(2, "  pipeline: 2\n  zero_stage: 2\n"))
    assert "parallelism.zero_stage=2 with pipeline=2" in message
    assert "set zero_stage: 1" in message


def test_more_stages_than_layers_is_refused() -> None:
    # tiny: token lookup, positions, 2 blocks, norm, head = 6 layers to cut
    message = error(gpt(8, "  pipeline: 8\n"))
    assert "has 6 layers to cut, fewer than the stages; use pipeline: 6 or less" in message


def test_a_deeper_model_takes_more_stages() -> None:
    spec = load_text(gpt(8, "  pipeline: 8\n", "{size: tiny, n_layer: 6}"), "job.yaml")
    assert spec.parallelism.pipeline == 8


def test_models_without_layers_name_the_ones_with() -> None:
    message = error(feature_job("mlp", "digits", "pipeline: 2"))
    assert "model 'mlp' does not expose its layers as a sequence" in message
    assert "gpt" in message


def test_a_gan_cannot_be_staged() -> None:
    message = error(feature_job("dcgan", "fashion-mnist", "pipeline: 2"))
    assert "trains as a gan task, which runs several engines" in message


@pytest.mark.parametrize(("workers", "replicas"), [(4, 1), (8, 2)])
def test_pipeline_and_tensor_combine(workers: int, replicas: int) -> None:
    """Stages split by tensor slices: the ranks of a pipeline and of its tensor groups
    read one replica's rows, so the global batch counts replicas only."""
    spec = load_text(gpt(workers, "  pipeline: 2\n  tensor: 2\n  zero_stage: 1\n"), "job.yaml")
    assert (spec.data_parallel_size, spec.parallelism.model_parallel) == (replicas, 4)
    assert spec.global_batch_size == 4 * 4 * replicas


def test_pipeline_and_tensor_keep_the_pipelines_zero_limit() -> None:
    message = error(gpt(4, "  pipeline: 2\n  tensor: 2\n  zero_stage: 2\n"))
    assert "parallelism.zero_stage=2 with pipeline=2" in message
    assert "set zero_stage: 1" in message


def test_pipeline_and_tensor_check_the_widths_against_the_tensor_degree() -> None:
    message = error(gpt(6, "  pipeline: 2\n  tensor: 3\n"))  # tiny: 2 heads
    assert "model.args.n_head=2 for model gpt must divide by parallelism.tensor=3" in message


@pytest.mark.parametrize("key", ["pipe_partitioned", "grad_partitioned"])
def test_pipeline_and_tensor_refuse_partitioned_activation_sends(key: str) -> None:
    """deepyard turns DeepSpeed's partitioned sends off under P x T (they keep the first
    micro-batch's shapes); a deepspeed block that asks for them is refused, not ignored."""
    text = gpt(4, "  pipeline: 2\n  tensor: 2\n  zero_stage: 1\n")
    message = error(text + f"deepspeed:\n  pipeline: {{{key}: true}}\n")
    assert f"deepspeed.pipeline.{key}=true with parallelism.pipeline 2 x tensor 2" in message
    assert "remove it from the deepspeed block" in message
    load_text(text + f"deepspeed:\n  pipeline: {{{key}: false}}\n", "job.yaml")
    load_text(gpt(2, "  pipeline: 2\n") + f"deepspeed:\n  pipeline: {{{key}: true}}\n", "j")


def test_pipeline_and_tensor_layouts_are_listed() -> None:
    message = error(gpt(8, "  data: 4\n  pipeline: 2\n  tensor: 2\n"))
    assert "{data: 2, pipeline: 2, tensor: 2}" in message


def test_tensor_parallel_ranks_share_rows() -> None:
    spec = load_text(gpt(4, "  tensor: 2\n  zero_stage: 1\n"), "job.yaml")
    assert spec.data_parallel_size == 2
    assert spec.global_batch_size == 4 * 4 * 2


def test_tensor_degree_must_divide_the_heads() -> None:
    message = error(gpt(3, "  tensor: 3\n"))  # tiny: 2 heads
    assert "model.args.n_head=2 for model gpt must divide by parallelism.tensor=3" in message


def test_tensor_parallelism_needs_a_model_with_a_plan() -> None:
    message = error(feature_job("cnn", "digits", "tensor: 2"))
    assert "model cnn has no tensor-parallel plan (models that have one: gpt)" in message


def test_tensor_parallelism_with_zero_3_is_refused() -> None:
    message = error(gpt(2, "  tensor: 2\n  zero_stage: 3\n"))
    assert "parallelism.zero_stage=3 with tensor=2" in message
