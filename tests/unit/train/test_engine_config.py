"""Spec → DeepSpeed config, optimizer and LR schedule, without starting DeepSpeed."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from deepyard.spec import validate
from deepyard.train.engine import build_optimizer, build_scheduler, deepspeed_config, lr_factor


@pytest.fixture
def spec(base_spec_dict):
    """spec(**sections): a validated JobSpec with sections merged over the base spec."""
    return lambda **sections: validate(base_spec_dict(**sections))


def test_batch_sizes_multiply_micro_accumulation_and_workers(spec) -> None:
    config = deepspeed_config(
        spec(training={"max_steps": 5, "gradient_accumulation": 4}, resources={"num_workers": 2})
    )
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 8 * 4 * 2


def test_global_batch_size_becomes_the_deepspeed_train_batch(spec) -> None:
    config = deepspeed_config(
        spec(
            data={"batch_size": None, "global_batch_size": 96},
            training={"max_steps": 5, "gradient_accumulation": 2},
            resources={"num_workers": 3},
        )
    )
    assert config["train_batch_size"] == 96
    assert config["train_micro_batch_size_per_gpu"] == 16
    assert config["gradient_accumulation_steps"] == 2


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_without_offload(spec, stage: int) -> None:
    config = deepspeed_config(spec(parallelism={"zero_stage": stage}))
    assert config["zero_optimization"] == {"stage": stage}
    # deepyard's torch optimizers must be accepted by ZeRO without DeepSpeed's kernels.
    assert config["zero_allow_untested_optimizer"] is True
    assert config["zero_force_ds_cpu_optimizer"] is False


def test_offload_blocks(spec) -> None:
    config = deepspeed_config(
        spec(parallelism={"zero_stage": 3, "offload_optimizer": "cpu", "offload_params": "cpu"})
    )
    assert config["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu"},
        "offload_param": {"device": "cpu"},
    }
    config = deepspeed_config(spec(parallelism={"zero_stage": 2, "offload_optimizer": "cpu"}))
    assert config["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}


def test_precision_blocks(spec) -> None:
    fp32 = deepspeed_config(spec())
    assert "bf16" not in fp32 and "fp16" not in fp32
    bf16 = deepspeed_config(spec(training={"max_steps": 5, "precision": "bf16"}))
    assert bf16["bf16"] == {"enabled": True}
    assert "fp16" not in bf16
    fp16 = deepspeed_config(spec(training={"max_steps": 5, "precision": "fp16"}))
    assert fp16["fp16"]["enabled"] is True
    assert "bf16" not in fp16


def test_gradient_clipping_on_and_off(spec) -> None:
    assert deepspeed_config(spec())["gradient_clipping"] == 1.0
    assert deepspeed_config(spec(optimizer={"grad_clip": 0.25}))["gradient_clipping"] == 0.25
    assert "gradient_clipping" not in deepspeed_config(spec(optimizer={"grad_clip": None}))


def test_spec_deepspeed_entries_win_by_deep_merge(spec) -> None:
    job = spec(
        parallelism={"zero_stage": 2, "offload_optimizer": "cpu"},
        training={"max_steps": 5, "precision": "bf16"},
        deepspeed={
            "zero_optimization": {"reduce_bucket_size": 1000, "offload_optimizer": {"pin": 1}},
            "bf16": {"enabled": False},
            "gradient_clipping": 0.5,
            "steps_per_print": 10,
            "train_batch_size": 8,  # agrees with the data section, so it is allowed
        },
    )
    config = deepspeed_config(job)
    assert config["zero_optimization"] == {
        "stage": 2,
        "offload_optimizer": {"device": "cpu", "pin": 1},
        "reduce_bucket_size": 1000,
    }
    assert config["bf16"] == {"enabled": False}
    assert config["gradient_clipping"] == 0.5
    assert config["steps_per_print"] == 10
    assert config["train_batch_size"] == 8
    # Deriving twice gives the same config: the merge copies, it never edits the spec.
    assert deepspeed_config(job) == config
    assert job.deepspeed["zero_optimization"] == {
        "reduce_bucket_size": 1000,
        "offload_optimizer": {"pin": 1},
    }


# learning-rate schedule ------------------------------------------------------------


def factors(job, total: int) -> list[float]:
    return [lr_factor(job, total, step) for step in range(total + 1)]


def test_warmup_ramps_linearly_to_the_peak(spec) -> None:
    job = spec(optimizer={"warmup_steps": 4, "schedule": "constant"})
    assert factors(job, 8)[:6] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_constant_stays_at_the_peak(spec) -> None:
    job = spec(optimizer={"schedule": "constant", "min_lr_ratio": 0.1})
    assert set(factors(job, 50)) == {1.0}


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_ends_at_min_lr_ratio(spec, schedule: str) -> None:
    job = spec(optimizer={"warmup_steps": 10, "schedule": schedule, "min_lr_ratio": 0.1})
    values = factors(job, 110)
    after_warmup = values[9:]
    assert after_warmup[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    assert values[-1] == pytest.approx(0.1)
    assert lr_factor(job, 110, 500) == pytest.approx(0.1)  # past the end: stays at the floor
    assert min(values) >= 0.1 - 1e-12
    # Halfway through the decay: cosine and linear both sit halfway between peak and floor.
    assert lr_factor(job, 110, 60) == pytest.approx(0.55)


def test_cosine_shape(spec) -> None:
    job = spec(optimizer={"schedule": "cosine", "min_lr_ratio": 0.0})
    quarter = lr_factor(job, 100, 25)
    assert quarter == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(job, 100, 100) == pytest.approx(0.0)


def test_scheduler_drives_the_optimizer_lr(spec) -> None:
    job = spec(optimizer={"lr": 0.1, "warmup_steps": 2, "schedule": "linear"})
    optimizer = build_optimizer(job, nn.Linear(3, 2))
    scheduler = build_scheduler(job, optimizer, total_steps=6)
    seen = []
    for _ in range(7):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1 * lr_factor(job, 6, s) for s in range(7)])
    assert seen[0] == pytest.approx(0.05)
    assert seen[-1] == pytest.approx(0.0)


def test_optimizer_follows_the_spec(spec) -> None:
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    adamw = build_optimizer(
        spec(optimizer={"lr": 0.02, "weight_decay": 0.1, "betas": [0.8, 0.9]}), model
    )
    assert isinstance(adamw, torch.optim.AdamW)
    group = adamw.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (0.02, 0.1, (0.8, 0.9))
    assert len(group["params"]) == 1  # frozen parameters are not optimized
    sgd = build_optimizer(spec(optimizer={"name": "sgd", "momentum": 0.5}), model)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5


def test_a_gpu_job_on_a_node_without_cuda_fails_saying_so() -> None:
    """gpus_per_worker means NCCL on CUDA devices: never a silent fall-back to CPU."""

    from deepyard.errors import SpecError
    from deepyard.train.dist import WorkerContext, free_port, init_process_group

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SpecError, match=r"resources.gpus_per_worker=1, but rank 0 .* no CUDA"):
        init_process_group(WorkerContext(0, 1, 0, "127.0.0.1", free_port()), 1, gpus=1)
