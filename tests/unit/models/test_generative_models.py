"""The autoencoder and the DCGAN: shapes a user relies on (encode's embeddings, images in
[0, 1]), their registry entries and tasks, and the errors for images they cannot take."""

from __future__ import annotations

import pytest
import torch

from deepyard import models


def test_autoencoder_reconstructs_the_input_shape_and_encodes_embeddings() -> None:
    model = models.build("conv-autoencoder", {"latent": 12}, (1, 28, 28), 10)
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        out = model(images)
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with torch.no_grad():
        embeddings = model.encode(images)  # what `deepyard eval --embeddings` calls
        assert torch.allclose(model.decoder(embeddings), out)
    assert embeddings.shape == (5, 12)


def test_dcgan_generates_images_in_range_and_scores_them() -> None:
    model = models.build("dcgan", {"width": 8, "latent": 10}, (1, 28, 28), 10)
    with torch.no_grad():
        fake = model.sample(torch.randn(6, 10))
    assert fake.shape == (6, 1, 28, 28)
    assert float(fake.min()) >= 0.0 and float(fake.max()) <= 1.0
    assert model(fake).shape == (6,)  # the discriminator's logits
    assert model.flops_per_sample((1, 28, 28)) > 0


@pytest.mark.parametrize(
    ("name", "family", "task"),
    [("conv-autoencoder", "autoencoder", "reconstruction"), ("dcgan", "gan", "gan")],
)
def test_registry_entries(name: str, family: str, task: str) -> None:
    entry = models.get(name)
    assert (entry.family, entry.task) == (family, task)
    assert entry.example_job is not None and entry.example_job.startswith("jobs/examples/")
    assert models.num_parameters(name) > 0


@pytest.mark.parametrize("name", ["conv-autoencoder", "dcgan"])
def test_image_sizes_that_do_not_halve_twice_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"model {name} .* must divide by 4; got 30x30"):
        models.build(name, {}, (1, 30, 30), 10)
    with pytest.raises(ValueError, match=rf"model.args.latent=0 for model {name}"):
        models.build(name, {"latent": 0}, (1, 28, 28), 10)
