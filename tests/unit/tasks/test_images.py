"""PNG grids: valid images of the documented size, each tile the image it shows."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from deepyard.tasks.images import GAP, grid_png, grid_size


def test_grid_of_grayscale_rows() -> None:
    rows = [torch.rand(5, 1, 6, 4), torch.rand(3, 1, 6, 4)]
    picture = Image.open(io.BytesIO(grid_png(rows, scale=1)))
    assert picture.format == "PNG" and picture.mode == "L"
    assert picture.size == grid_size(2, 5, 6, 4, scale=1)
    pixels = np.asarray(picture) / 255
    top, left = GAP + (6 + GAP), GAP + 2 * (4 + GAP)  # row 1, column 2
    assert np.allclose(pixels[top : top + 6, left : left + 4], rows[1][2, 0].numpy(), atol=1 / 255)
    assert (pixels[top : top + 6, -GAP - 4 :] == 1).all()  # a short row leaves white space


def test_colour_images_and_clamping() -> None:
    picture = Image.open(io.BytesIO(grid_png([torch.full((2, 3, 4, 4), 1.5)])))
    assert picture.mode == "RGB" and picture.size == grid_size(1, 2, 4, 4)
    assert np.asarray(picture).max() == 255
