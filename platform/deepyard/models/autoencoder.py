"""A convolutional autoencoder: two stride-2 convolutions down to a `latent`-wide code,
two transposed convolutions back up; trained to reproduce its input (task
`reconstruction`). `encode(inputs)` gives the (N, latent) embeddings."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


def quarter_size(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height / 4, width / 4): the resolution after two stride-2 stages."""
    channels, height, width = checks.image_input(model, input_shape)
    if height % 4 or width % 4:
        raise ValueError(
            f"model {model} halves the image twice, so its height and width must divide by "
            f"4; got {height}x{width}; resize the images (e.g. 28x28, 32x32, 8x8)"
        )
    return channels, height // 4, width // 4


class ConvAutoencoder(nn.Module):
    def __init__(self, channels: int, height: int, width: int, base: int, latent: int) -> None:
        super().__init__()
        self.code_shape = (2 * base, height, width)  # at a quarter of the input size
        flat = 2 * base * height * width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, base, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(base, 2 * base, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(flat, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, flat),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, self.code_shape),
            nn.ConvTranspose2d(2 * base, base, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(base, channels, 4, 2, 1),
            nn.Sigmoid(),  # pixels in [0, 1], as the packaged image datasets hold them
        )

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, latent) embeddings of images (N, C, H, W)."""
        return self.encoder(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(inputs))


@register(
    "conv-autoencoder",
    family="autoencoder",
    summary="Convolutional autoencoder (reconstruction MSE; encode() gives embeddings)",
    example_job="jobs/examples/fashion_mnist_autoencoder.yaml",
    task="reconstruction",
)
def build_conv_autoencoder(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 32,
    latent: int = 32,
) -> nn.Module:
    """`num_classes` is not used: the model learns the images, not their labels."""
    checks.positive("conv-autoencoder", width=width, latent=latent)
    channels, height, wide = quarter_size("conv-autoencoder", input_shape)
    return ConvAutoencoder(channels, height, wide, width, latent)
