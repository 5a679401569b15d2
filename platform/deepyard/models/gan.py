"""DCGAN: a generator (noise → image) and a discriminator (image → real/fake logit), built
as one module whose two halves train as two DeepSpeed engines (task `gan`).

Images are in [0, 1] on both sides, as the packaged image datasets hold them: the
discriminator rescales to [-1, 1] itself and the generator's tanh is mapped back.
"""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.autoencoder import quarter_size
from deepyard.models.registry import register


class Generator(nn.Module):
    """Noise (N, latent) → a (2w, H/4, W/4) map → two stride-2 transposed convolutions."""

    def __init__(self, channels: int, height: int, width: int, base: int, latent: int) -> None:
        super().__init__()
        self.latent_dim = latent
        self.net = nn.Sequential(
            nn.Linear(latent, 2 * base * height * width, bias=False),
            nn.Unflatten(1, (2 * base, height, width)),
            nn.BatchNorm2d(2 * base),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * base, base, 4, 2, 1, bias=False),
            nn.BatchNorm2d(base),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(base, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return (self.net(noise) + 1) / 2


class Discriminator(nn.Module):
    """Two stride-2 convolutions with leaky ReLU (batch norm on the second), a linear logit."""

    def __init__(self, channels: int, height: int, width: int, base: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, base, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(base, 2 * base, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * base),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(2 * base * height * width, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1).squeeze(1)


class GAN(nn.Module):
    """Both networks; `forward(images)` is the discriminator's logits (what evaluation and
    FLOP counting call), `sample(noise)` the generator's images."""

    def __init__(self, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = generator.latent_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)

    def flops_per_sample(self, input_shape: tuple[int, ...]) -> float:
        """Forward FLOPs such that 3x them is one real image's training cost: the D step
        runs G once and D twice (real, fake) with D's backward; the G step runs G and D
        with a backward through both, so 3 x (4/3 G + 3 D) = 4 G + 9 D."""
        from torch.utils.flop_counter import FlopCounterMode

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device  # the meta device counts the same
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter:
                fake = self.generator(torch.zeros(2, self.latent_dim, device=device))
            g = counter.get_total_flops() / 2
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                self.discriminator(torch.zeros((2, *input_shape), device=device))
            d = counter.get_total_flops() / 2
        finally:
            self.train(was_training)
        del fake
        return 4 * g / 3 + 3 * d


@register(
    "dcgan",
    family="gan",
    summary="DCGAN: generator and discriminator as two DeepSpeed engines (task gan)",
    example_job="jobs/examples/fashion_mnist_dcgan.yaml",
    task="gan",
)
def build_dcgan(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 32,
    latent: int = 64,
) -> nn.Module:
    """`num_classes` is not used: the GAN is unconditional."""
    checks.positive("dcgan", width=width, latent=latent)
    channels, height, wide = quarter_size("dcgan", input_shape)
    return GAN(
        Generator(channels, height, wide, width, latent),
        Discriminator(channels, height, wide, width),
    )
