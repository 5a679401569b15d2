"""GAN: a generator and a discriminator, each its own DeepSpeed engine with its own
optimizer and LR schedule (`train.multi_engine.MultiEngine`), trained in one job.

Per micro-batch: the discriminator's step on real images (target 1) and generated ones
(target 0, the generator detached), then the generator's step through the frozen
discriminator (target 1: the non-saturating loss). Both losses are binary cross-entropy
on logits; the step's `loss` is loss_d + loss_g, and each is reported too.

Evaluation scores every eval image against as many generated ones, from noise fixed per
eval row (the same images at every evaluation, on any number of ranks): the losses, the
Fréchet distance and inception score of `gan_score`'s classifier, and a PNG grid of
samples from fixed noise, so successive grids show the generator's progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from deepyard.data import TensorData, resolve_sources
from deepyard.errors import SpecError
from deepyard.tasks import gan_score
from deepyard.tasks.base import EvalBatch, Scoring, StepResult, Task, to_device
from deepyard.tasks.images import grid_png
from deepyard.train.evaluate import Evaluation

NOISE_SEED = 1234  # the eval noise: fixed, so evaluations compare like with like
GRID = (4, 8)  # rows x columns of the sample grid


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into `module`'s parameters (the generator's step goes through it)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def bce(logits: torch.Tensor, target: float, reduction: str = "mean") -> torch.Tensor:
    labels = torch.full_like(logits, target)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction=reduction)


class GanTask(Task):
    def __init__(self, info: Any) -> None:
        super().__init__(info)
        self.spec: Any = None
        self.scorers: dict[str, tuple[gan_score.ScoreNet, float]] = {}

    def prepare(self, spec: Any) -> None:
        self.spec = spec  # the training split the scorer learns from

    def build_engine(
        self, spec: Any, model: torch.nn.Module, total_steps: int, load_universal: bool
    ) -> Any:
        from deepyard.train.engine import build_engine
        from deepyard.train.multi_engine import MultiEngine

        if spec.parallelism.zero_stage > 2:
            raise SpecError(
                f"parallelism.zero_stage={spec.parallelism.zero_stage}: model {spec.model.name} "
                "freezes its discriminator for the generator's step, which ZeRO-3's "
                "partitioned parameters do not allow; use zero_stage 0, 1 or 2"
            )
        if load_universal:
            raise SpecError(
                f"model {spec.model.name} resumes only on the world size its checkpoint was "
                "saved with (two engines per checkpoint); set resources.num_workers back, or "
                "start over with --restart"
            )
        self.prepare(spec)
        engines = {
            "generator": build_engine(spec, cast(nn.Module, model.generator), total_steps),
            "discriminator": build_engine(spec, cast(nn.Module, model.discriminator), total_steps),
        }
        return MultiEngine(engines, model)

    def train_step(
        self,
        engine: Any,
        next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        accumulation: int,
        device: torch.device,
        dtype: torch.dtype,
        pad_id: int | None = None,
    ) -> StepResult:
        gen, disc = engine["generator"], engine["discriminator"]
        latent = engine.module.latent_dim
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        forward_s = 0.0
        for _ in range(accumulation):
            real, _ = next_batch()
            started = time.perf_counter()
            real = to_device(real, device, dtype)
            fake = gen(torch.randn(len(real), latent, device=device, dtype=dtype))
            d_real, d_fake = disc(real), disc(fake.detach())
            loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
            forward_s += time.perf_counter() - started
            disc.backward(loss_d)
            disc.step()
            with frozen(disc.module):
                started = time.perf_counter()
                loss_g = bce(disc.module(fake), 1.0)
                forward_s += time.perf_counter() - started
                gen.backward(loss_g)
            gen.step()
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
            sums["d_real"] += float(torch.sigmoid(d_real.detach().float()).mean())
            sums["d_fake"] += float(torch.sigmoid(d_fake.detach().float()).mean())
        extra = {k: v / accumulation for k, v in sums.items()}
        return StepResult(extra["loss_d"] + extra["loss_g"], 0, forward_s, extra)

    def scoring(
        self, engine: Any, data: TensorData, device: torch.device, dtype: torch.dtype
    ) -> Scoring:
        """`_Scoring` on the eval rows' indices (each picks its row's fixed noise), and the
        scorer's accuracy."""
        scorer, scorer_accuracy = self._scorer(data)
        model = getattr(engine, "module", engine)  # a plain module in `deepyard eval`
        noise = torch.randn(
            len(data), model.latent_dim, generator=torch.Generator().manual_seed(NOISE_SEED)
        )
        rows = TensorData(data.inputs, torch.arange(len(data)), data.input_shape, 1)
        scoring = _Scoring(model, scorer, noise, device, dtype)
        return Scoring(scoring, rows, {"scorer_accuracy": scorer_accuracy})

    def images(
        self, engine: Any, data: TensorData, rank: int, device: torch.device, dtype: torch.dtype
    ) -> dict[str, bytes]:
        """Rank 0's grid of samples (ZeRO 0-2 only: each rank holds the whole generator)."""
        return {"samples": self.samples(engine, device, dtype)} if rank == 0 else {}

    def samples(self, engine: Any, device: torch.device, dtype: torch.dtype) -> bytes:
        """A grid of images generated from the first eval noise rows (fixed)."""
        model = getattr(engine, "module", engine)
        count = GRID[0] * GRID[1]
        noise = torch.randn(
            count, model.latent_dim, generator=torch.Generator().manual_seed(NOISE_SEED)
        )
        engine.eval()
        with torch.no_grad():
            images = model.sample(noise.to(device, dtype)).float().cpu()
        engine.train()
        return grid_png([images[i * GRID[1] : (i + 1) * GRID[1]] for i in range(GRID[0])])

    def _scorer(self, data: TensorData) -> tuple[gan_score.ScoreNet, float]:
        spec = self.spec
        if spec is None:
            raise RuntimeError("GanTask.evaluate needs prepare(spec) first (the scorer's data)")
        train_uri, _ = resolve_sources(spec.data)
        if train_uri not in self.scorers:
            self.scorers[train_uri] = gan_score.shared_scorer(
                train_uri, spec.data.features, spec.data.label, data
            )
        return self.scorers[train_uri]


class _Scoring(Task):
    """One evaluation's scoring: `labels` are the eval rows' indices, which pick each
    row's fixed noise; `outputs` are the discriminator's logits on the real images."""

    def __init__(
        self,
        model: Any,  # models.gan.GAN
        scorer: gan_score.ScoreNet,
        noise: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model, self.scorer, self.noise = model, scorer, noise
        self.device, self.dtype = device, dtype

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        fake = self.model.sample(self.noise[labels.cpu()].to(self.device, self.dtype))
        d_fake = self.model(fake)
        loss_d = bce(outputs, 1.0, "none") + bce(d_fake, 0.0, "none")
        loss_g = bce(d_fake, 1.0, "none")
        real_images, fake_images = inputs.float().cpu(), fake.float().cpu()
        fake_logits = self.scorer(fake_images)
        sums = {
            "loss_d": (loss_d.cpu() * mask.cpu()).sum(),
            "loss_g": (loss_g.cpu() * mask.cpu()).sum(),
            "rows": mask.sum(),
        }
        rows = {
            "real": self.scorer.features(real_images),
            "fake": self.scorer.body(fake_images),
            "fake_probs": fake_logits.softmax(1),
        }
        return EvalBatch(sums, rows)

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        count = float(sums.get("rows", torch.tensor(0.0)))
        loss_d = float(sums.get("loss_d", torch.tensor(0.0))) / max(count, 1.0)
        loss_g = float(sums.get("loss_g", torch.tensor(0.0))) / max(count, 1.0)
        metrics = {"loss_d": loss_d, "loss_g": loss_g, "loss": loss_d + loss_g}
        if count >= 2:
            metrics["frechet_distance"] = gan_score.frechet_distance(rows["real"], rows["fake"])
            metrics["inception_score"] = gan_score.inception_score(rows["fake_probs"])
        metrics["num_samples"] = count
        return Evaluation(metrics)
