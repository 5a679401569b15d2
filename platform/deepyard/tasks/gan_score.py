"""The GAN's score: how far generated images are from real ones, in the feature space of
a small CNN classifier trained on the job's own training data (Fashion-MNIST's garments
for the example job).

- `frechet_distance`: FID's formula on this classifier's 64 penultimate features,
  ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)), between Gaussians fitted to the
  features of every eval image and of as many generated ones. Lower is better; 0 for
  identical statistics. It is FID-style, not FID: Inception-v3 features are not available
  offline, so numbers are comparable only with this scorer on the same data.
- `inception_score`: exp(E_x KL(p(y|x) || p(y))) of the classifier's class probabilities
  on generated images: high when each sample is confidently one class and the classes
  are varied (at most the number of classes).

The classifier trains once per training split (seeded, under its own RNG so the job's
random streams are untouched), is cached under $DEEPYARD_CACHE/gan-scorer/ (written
atomically) and loaded with torch.load(weights_only=True). Rank 0 loads or trains it and
broadcasts the weights, so every rank scores with the same network.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepyard.data import TensorData, read_split
from deepyard.data.packaged_sources import cache_root

VERSION = 3
FEATURES = 64
TRAIN_ROWS = 20_000  # of the training split, 3 passes
EPOCHS = 3
MIN_STEPS = 150  # small splits (8x8 digits) take more passes
BATCH = 128


class ScoreNet(nn.Module):
    """Two conv + max-pool stages (32, 64 channels), a 64-wide feature layer, a linear
    classifier."""

    def __init__(self, channels: int, num_classes: int, height: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID's formula between Gaussians fitted to two (N, D) feature sets (float64)."""
    from scipy import linalg

    a, b = real.double().numpy(), fake.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features make singular covariances
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():  # nudge both off singular, as FID does
            eps = np.eye(len(mu_a)) * 1e-6
            root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def inception_score(probs: torch.Tensor) -> float:
    """exp(mean KL(p(y|x) || p(y))) over the rows of (N, C) class probabilities."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


def untouched_rng(build: Callable[..., ScoreNet], *args: Any) -> ScoreNet:
    """A new network whose random initial weights do not draw from the job's generator:
    a resumed run (scorer loaded) must draw exactly what an uninterrupted one (scorer
    trained) drew, or its noise, and so its losses, part ways."""
    with torch.random.fork_rng():
        return build(*args)


def train_scorer(data: TensorData, seed: int = 0) -> ScoreNet:
    """The classifier, trained on (up to TRAIN_ROWS of) `data` under a private RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ScoreNet(data.input_shape[0], data.num_classes, *data.input_shape[1:])
        rows = min(len(data), TRAIN_ROWS)
        order = torch.randperm(len(data))[:rows]
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
        for _ in range(max(EPOCHS, math.ceil(MIN_STEPS / math.ceil(rows / BATCH)))):
            shuffled = order[torch.randperm(rows)]
            for lo in range(0, rows, BATCH):
                idx = shuffled[lo : lo + BATCH]
                loss = F.cross_entropy(net(data.inputs[idx]), data.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: ScoreNet, data: TensorData) -> float:
    correct = sum(
        int((net(data.inputs[lo : lo + 512]).argmax(1) == data.labels[lo : lo + 512]).sum())
        for lo in range(0, len(data), 512)
    )
    return correct / max(1, len(data))


def cache_path(train_uri: str, features: str, label: str) -> Path:
    """Where the scorer of this training split is cached: keyed by the file's content when
    it is a local file (the same data anywhere shares one scorer), else by its URI."""
    key = hashlib.sha256(f"v{VERSION}|{features}|{label}|".encode())
    if os.path.isfile(train_uri):
        with open(train_uri, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                key.update(block)
    else:
        key.update(train_uri.encode())
    return cache_root() / "gan-scorer" / f"{key.hexdigest()[:20]}.pt"


def load_or_train(
    train_uri: str, features: str, label: str, eval_data: TensorData
) -> tuple[ScoreNet, float]:
    """(the scorer, its accuracy on the eval split), from the cache or trained now."""
    path = cache_path(train_uri, features, label)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = untouched_rng(ScoreNet, saved["channels"], saved["num_classes"], *saved["size"])
        net.load_state_dict(saved["state"])
        return net.eval(), float(saved["accuracy"])
    train = read_split(train_uri, features, label)
    if train.num_classes < 2:
        raise ValueError(
            f"{train_uri}: the GAN's score needs class labels to train its feature "
            f"classifier, but data.label={label!r} holds {train.num_classes} class; use "
            "image data with class labels (e.g. data.dataset: fashion-mnist)"
        )
    net = train_scorer(train)
    score = accuracy(net, eval_data)
    saved = {
        "state": net.state_dict(),
        "channels": train.input_shape[0],
        "size": list(train.input_shape[1:]),
        "num_classes": train.num_classes,
        "accuracy": score,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(saved, tmp)
    os.replace(tmp, path)
    return net, score


def shared_scorer(
    train_uri: str, features: str, label: str, eval_data: TensorData
) -> tuple[ScoreNet, float]:
    """Rank 0's scorer on every rank (rank 0 loads or trains it; the others wait)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return load_or_train(train_uri, features, label, eval_data)
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        net, score = load_or_train(train_uri, features, label, eval_data)
        box[0] = (net.head.out_features, net.state_dict(), score)
    dist.broadcast_object_list(box, src=0)
    classes, state, score = box[0]
    net = untouched_rng(ScoreNet, eval_data.input_shape[0], classes, *eval_data.input_shape[1:])
    net.load_state_dict(state)
    return net.eval(), score
