"""Image grids as PNG bytes (Pillow): what the autoencoder and GAN tasks show at each
evaluation. The loop sends them to the driver, which writes RUN_DIR/<folder>/step_N.png."""

from __future__ import annotations

import io

import numpy as np
import torch

GAP = 2  # pixels between tiles


def grid_png(rows: list[torch.Tensor], scale: int = 2) -> bytes:
    """A PNG of images laid out one list entry per grid row: each entry is (N, C, H, W)
    in [0, 1] with C = 1 (grayscale) or 3 (RGB); tiles are enlarged `scale` times."""
    from PIL import Image

    images = [r.detach().float().cpu().clamp(0, 1) for r in rows]
    channels, height, width = images[0].shape[1:]
    columns = max(len(r) for r in images)
    tile_h, tile_w = height + GAP, width + GAP
    canvas = np.ones((len(images) * tile_h + GAP, columns * tile_w + GAP, channels))
    for i, row in enumerate(images):
        for j, image in enumerate(row):
            top, left = GAP + i * tile_h, GAP + j * tile_w
            canvas[top : top + height, left : left + width] = image.permute(1, 2, 0).numpy()
    pixels = (canvas * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def grid_size(rows: int, columns: int, height: int, width: int, scale: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of `grid_png`'s picture for rows x columns tiles."""
    return (
        (columns * (width + GAP) + GAP) * scale,
        (rows * (height + GAP) + GAP) * scale,
    )
