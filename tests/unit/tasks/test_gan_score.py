"""The GAN's score: the Fréchet distance equals an independent computation, is near 0
between real image sets and far larger for noise; the inception score's bounds; the
classifier is cached once (weights-only) and reused; the evaluation of generated images
is the same on one process and on two gloo ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepyard.data import TensorData, read_split
from deepyard.data.packaged import ensure_prepared
from deepyard.models.gan import build_dcgan
from deepyard.tasks import gan_score
from deepyard.tasks.gan import _Scoring
from deepyard.testing.gloo import on_two_ranks
from deepyard.train.evaluate import run_eval

CPU = torch.device("cpu")


def independent_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Tr((S_a S_b)^(1/2)) via the symmetric form S_a^(1/2) S_b S_a^(1/2) (eigenvalues)."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(inner, 0, None)).sum()
    mean = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return float(mean + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def test_frechet_distance_matches_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    fd = gan_score.frechet_distance(torch.tensor(a), torch.tensor(b))
    assert fd == pytest.approx(independent_frechet(a, b), rel=1e-6)
    assert gan_score.frechet_distance(torch.tensor(a), torch.tensor(a)) == pytest.approx(
        0.0, abs=1e-6
    )


def test_inception_score_bounds() -> None:
    confident = torch.eye(10).repeat(3, 1)  # every class, each certain
    assert gan_score.inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    unsure = torch.full((30, 10), 0.1)  # no class at all
    assert gan_score.inception_score(unsure) == pytest.approx(1.0)
    one_class = torch.eye(10)[[3] * 30]  # certain, but always the same class
    assert gan_score.inception_score(one_class) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def digits() -> tuple[str, TensorData]:
    train, test = ensure_prepared("digits")
    return str(train), read_split(str(test), "features", "label")


@pytest.fixture(scope="module")
def scorer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scorer-cache")


@pytest.fixture
def scorer(
    digits: tuple[str, TensorData], scorer_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> gan_score.ScoreNet:
    """Trained by the first test that asks (into a cache of this module), then loaded."""
    monkeypatch.setenv("DEEPYARD_CACHE", str(scorer_cache))
    train, test = digits
    net, accuracy = gan_score.load_or_train(train, "features", "label", test)
    assert accuracy > 0.8  # 8x8 digits; chance is 0.10
    return net


def test_score_is_low_for_real_held_out_images_and_high_for_noise(
    scorer: gan_score.ScoreNet, digits: tuple[str, TensorData]
) -> None:
    train_uri, test = digits
    train = read_split(train_uri, "features", "label")
    with torch.no_grad():
        held_out = scorer.features(test.inputs)
        real = scorer.features(train.inputs[:360])
        gen = torch.Generator().manual_seed(0)
        noise = scorer.features(torch.rand(360, 1, 8, 8, generator=gen))
        blank = scorer.features(torch.zeros(360, 1, 8, 8))
    real_fd = gan_score.frechet_distance(held_out, real)
    assert real_fd < 0.1 * gan_score.frechet_distance(held_out, noise)
    assert real_fd < 0.1 * gan_score.frechet_distance(held_out, blank)
    with torch.no_grad():
        real_is = gan_score.inception_score(scorer(test.inputs).softmax(1))
        noise_is = gan_score.inception_score(scorer(torch.rand(360, 1, 8, 8)).softmax(1))
    assert real_is > 5 > noise_is  # varied, confident classes vs. not


def test_scorer_is_cached_once_and_loaded_weights_only(
    scorer: gan_score.ScoreNet, digits: tuple[str, TensorData], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test = digits
    path = gan_score.cache_path(train, "features", "label")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    monkeypatch.setattr(gan_score, "train_scorer", lambda data: pytest.fail("trained again"))
    again, _ = gan_score.load_or_train(train, "features", "label", test)
    for name, value in scorer.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    torch.load(path, weights_only=True)  # plain tensors and numbers, nothing pickled


def test_loading_the_scorer_draws_nothing_from_the_jobs_generator(
    scorer: gan_score.ScoreNet, digits: tuple[str, TensorData]
) -> None:
    """A resumed run loads the scorer that an uninterrupted run trained: neither may draw
    random numbers, or the two runs' noise (and losses) part ways."""
    train, test = digits
    before = torch.get_rng_state()
    gan_score.load_or_train(train, "features", "label", test)
    gan_score.shared_scorer(train, "features", "label", test)
    assert torch.equal(torch.get_rng_state(), before)


def _scored(rank: int, world_size: int) -> dict:
    """A small generator's eval images scored on `world_size` ranks (one scorer, seeded)."""
    data = TensorData(
        torch.rand(23, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
        torch.arange(23),
        (1, 8, 8),
        1,
    )
    torch.manual_seed(0)
    model = build_dcgan((1, 8, 8), 10, width=4, latent=5)
    scorer = gan_score.ScoreNet(1, 10, 8, 8).eval()
    noise = torch.randn(23, 5, generator=torch.Generator().manual_seed(2))
    scoring = _Scoring(model, scorer, noise, CPU, torch.float32)
    return run_eval(scoring, model, data, rank, world_size, 5, CPU, torch.float32).metrics


def test_generated_images_score_the_same_on_two_gloo_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    alone = _scored(0, 1)
    assert alone["num_samples"] == 23
    assert np.isfinite(alone["frechet_distance"]) and alone["inception_score"] >= 1.0
    for metrics in on_two_ranks(_scored, tmp_path):
        assert metrics == pytest.approx(alone, rel=1e-6)
