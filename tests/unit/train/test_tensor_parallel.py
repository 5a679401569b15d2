"""Tensor parallelism without processes: the spec-time checks and their messages, the
DeepSpeed section as DeepSpeed's own AutoTP config parser reads it, and the rank layout.
(test_tensor_parallel_training.py trains on real gloo ranks.)"""

from __future__ import annotations

import re

import pytest
import torch
from deepspeed.module_inject.autotp_config import AutoTPConfig, PartitionType

from deepyard import models
from deepyard.models import tensor_plans
from deepyard.models.registry import Vocab
from deepyard.models.tensor_plans import Split, TensorPlan
from deepyard.train import tensor_parallel

TINY = {"size": "tiny", "n_head": 4, "d_model": 32, "max_seq_len": 16}


def _gpt() -> torch.nn.Module:
    return models.build("gpt", TINY, (16,), 2, Vocab(size=64, pad_id=0))


@pytest.mark.parametrize(
    ("args", "tensor"),
    [({}, 2), ({}, 4), ({"size": "small"}, 3), ({"size": "small"}, 12), (TINY, 4)],
)
def test_gpt_shapes_that_split_pass(args, tensor: int) -> None:
    tensor_parallel.check("gpt", args, tensor)


def test_tensor_one_needs_no_plan() -> None:
    tensor_parallel.check("transformer", {}, 1)
    assert tensor_parallel.deepspeed_section("transformer", {}, torch.nn.Linear(2, 2), 1) == {}


def test_a_model_without_a_plan_is_refused_with_the_ones_that_have_one() -> None:
    with pytest.raises(ValueError) as error:
        tensor_parallel.check("transformer", {}, 2)
    assert str(error.value) == (
        "parallelism.tensor=2, but model transformer has no tensor-parallel plan (models "
        "that have one: gpt); use parallelism.tensor: 1 and data parallelism (ZeRO) for it"
    )


@pytest.mark.parametrize(
    ("args", "tensor", "message"),
    [
        # the "mini" default: 4 heads
        ({}, 3, "model.args.n_head=4 for model gpt must divide by parallelism.tensor=3"),
        ({}, 8, "use tensor: 1, 2 or 4, or set model.args.n_head to a multiple of 8"),
        ({"size": "small"}, 8, "use tensor: 1, 2, 3, 4, 6 or 12, or set model.args.n_head"),
        ({"n_head": 1, "d_model": 32}, 2, "model.args.n_head=1 for model gpt"),
    ],
)
def test_heads_that_do_not_split_name_the_field_and_the_choices(args, tensor, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tensor_parallel.check("gpt", args, tensor)


def test_the_plan_checked_for_stage_slices_is_the_models() -> None:
    """Pipeline stages split by the same plan, checked against the whole (meta) model."""
    from deepyard.models.layer_init import build_on_meta

    model = build_on_meta("gpt", {"size": "tiny"}, (16,), 2, Vocab(50, 0))
    assert tensor_parallel.verified_plan("gpt", model, 2) is tensor_plans.get("gpt")
    with pytest.raises(ValueError, match=re.escape("splits 64 features over parallelism.tensor=3")):
        tensor_parallel.verified_plan("gpt", model, 3)


def test_deepspeed_reads_the_section_as_the_plan_says() -> None:
    """DeepSpeed's own parser: qkv is split part by part (q, k, v each by heads), the
    MLP's first Linear by output, both output projections by input; the embeddings and
    the tied head match no spec, so AutoTP leaves them whole."""
    section = tensor_parallel.deepspeed_section("gpt", TINY, _gpt(), 2)["tensor_parallel"]
    assert section["autotp_size"] == 2
    config = AutoTPConfig.from_dict(section["partition_config"])
    assert not config.use_default_specs
    qkv = config.find_matching_spec("blocks.1.attn.qkv.weight")
    assert qkv is not None and qkv.partition_type == PartitionType.COLUMN
    assert qkv.shape == (3, -1) and qkv.get_partition_dim() == 0
    kinds = {
        name: spec.partition_type if spec else None
        for name in (
            "blocks.0.attn.proj.weight",
            "blocks.0.mlp.0.weight",
            "blocks.0.mlp.2.weight",
            "head.proj.weight",
            "embed.weight",
            "embed.position.weight",
            "blocks.0.ln_attn.weight",
        )
        for spec in [config.find_matching_spec(name)]
    }
    assert kinds == {
        "blocks.0.attn.proj.weight": PartitionType.ROW,
        "blocks.0.mlp.0.weight": PartitionType.COLUMN,
        "blocks.0.mlp.2.weight": PartitionType.ROW,
        "head.proj.weight": None,
        "embed.weight": None,
        "embed.position.weight": None,
        "blocks.0.ln_attn.weight": None,
    }
    # Anchored: a longer name that merely starts like a split one is not split.
    assert config.find_matching_spec("blocks.0.mlp.0.weight_extra") is None


def test_section_checks_the_args_again() -> None:
    with pytest.raises(ValueError, match=re.escape("model.args.n_head=4 for model gpt")):
        tensor_parallel.deepspeed_section("gpt", TINY, _gpt(), 8)


def _with_plan(monkeypatch: pytest.MonkeyPatch, *splits: Split) -> None:
    plan = tensor_plans.get("gpt")
    assert plan is not None
    monkeypatch.setitem(tensor_plans._PLANS, "gpt", TensorPlan(splits, plan.widths))


def test_a_plan_that_names_no_parameter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_plan(monkeypatch, Split(r"blocks\.\d+\.attn\.c_attn\.weight", "column", parts=3))
    with pytest.raises(ValueError, match="names no parameter of the built model"):
        tensor_parallel.deepspeed_section("gpt", TINY, _gpt(), 2)


def test_a_plan_may_not_split_the_tied_head(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_plan(monkeypatch, Split(r"embed\.weight", "column"))
    with pytest.raises(
        ValueError, match=re.escape("embed.weight is not a Linear weight of its own")
    ):
        tensor_parallel.deepspeed_section("gpt", TINY, _gpt(), 2)


def test_layout_puts_consecutive_ranks_in_one_tensor_group() -> None:
    assert tensor_parallel.tensor_parallel_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert tensor_parallel.data_parallel_groups(8, 4) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [tensor_parallel.data_parallel_coords(r, 8, 4) for r in (0, 3, 4, 7)] == [
        (0, 2),
        (0, 2),
        (1, 2),
        (1, 2),
    ]
    assert tensor_parallel.data_parallel_coords(3, 4, 1) == (3, 4)  # no tensor parallelism
    assert [tensor_parallel.dropout_seed(10, r, 4, 2) for r in range(4)] == [10, 10, 11, 11]


def test_layout_of_a_world_the_degree_does_not_divide_names_the_choices() -> None:
    with pytest.raises(ValueError) as error:
        tensor_parallel.data_parallel_coords(0, 6, 4)
    assert str(error.value) == (
        "parallelism.tensor=4 does not divide 6 workers; use tensor: 1, 2, 3 or 6"
    )


def test_the_config_drops_the_batch_deepspeed_counts_two_ways() -> None:
    """DeepSpeed checks train_batch_size against all ranks at start-up and against the
    data-parallel ranks under ZeRO-3: left out, it derives it from the micro-batch."""
    config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 16,
        "zero_optimization": {"stage": 3},
        "tensor_parallel": {"tp_overlap_comm": True},  # a user's deepspeed: block
    }
    ready = tensor_parallel.with_tensor_parallel(config, "gpt", TINY, _gpt(), 2)
    assert "train_batch_size" not in ready
    assert ready["train_micro_batch_size_per_gpu"] == 8
    assert ready["tensor_parallel"]["tp_overlap_comm"] is True
    assert ready["tensor_parallel"]["autotp_size"] == 2
    assert "train_batch_size" in config  # the caller's config is left as it was
    assert tensor_parallel.with_tensor_parallel(config, "gpt", TINY, _gpt(), 1) is config


def test_a_deepspeed_block_that_contradicts_the_degree_is_refused() -> None:
    with pytest.raises(ValueError) as error:
        tensor_parallel.with_tensor_parallel(
            {"tensor_parallel": {"autotp_size": 4}}, "gpt", TINY, _gpt(), 2
        )
    assert str(error.value) == (
        "deepspeed.tensor_parallel.autotp_size=4 contradicts parallelism.tensor=2; "
        "remove it from the deepspeed block"
    )


def test_merging_shards_that_drifted_apart_names_the_tensor() -> None:
    state = _gpt().state_dict()
    drifted = {**state, "head.norm.weight": state["head.norm.weight"] + 1e-3}
    with pytest.raises(
        ValueError, match=re.escape("head.norm.weight differs between tensor-parallel")
    ):
        tensor_parallel.merge_shards("gpt", [state, drifted])
    assert tensor_parallel.merge_shards("transformer", [state]) == dict(state)
