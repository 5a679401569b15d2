"""Attributions made visible: a PNG per image (input | heatmap) and one HTML page of tokens.

Colours: red where the input raises the target class's logit, blue where it lowers it,
white where it does nothing; scaled by the largest magnitude in that row.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

GAP_PX = 4  # white space between the image and its heatmap
TARGET_PX = 128  # small images are scaled up (nearest neighbour) to about this size


def scale_for(height: int, width: int) -> int:
    return max(1, TARGET_PX // max(height, width))


def _as_chw(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        return array
    if array.ndim == 2:
        return array[None]
    return array.reshape(1, 1, -1)  # flat features: one row of pixels


def _image(values: np.ndarray) -> Image.Image:
    """(C, H, W) input → RGB, its range stretched to 0-255."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    pixels = (scaled * 255).round().astype(np.uint8)
    if pixels.shape[0] == 3:
        return Image.fromarray(pixels.transpose(1, 2, 0), "RGB")
    gray = pixels.mean(0).round().astype(np.uint8) if pixels.shape[0] != 1 else pixels[0]
    return Image.fromarray(gray, "L").convert("RGB")


def _heatmap(attribution: np.ndarray) -> Image.Image:
    """(C, H, W) attribution summed over channels → red (+) / white / blue (-)."""
    summed = attribution.sum(0)
    top = float(np.abs(summed).max()) or 1.0
    strength = (np.abs(summed) / top * 255).round().astype(np.int32)
    rgb = np.full((*summed.shape, 3), 255, dtype=np.int32)
    positive, negative = summed > 0, summed < 0
    rgb[positive, 1] -= strength[positive]
    rgb[positive, 2] -= strength[positive]
    rgb[negative, 0] -= strength[negative]
    rgb[negative, 1] -= strength[negative]
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def saliency_png(inputs: np.ndarray, attribution: np.ndarray, path: Path) -> tuple[int, int]:
    """Write the input and its heatmap side by side; returns the PNG's (width, height)."""
    image, heat = _image(_as_chw(inputs)), _heatmap(_as_chw(attribution))
    s = scale_for(image.height, image.width)
    size = (image.width * s, image.height * s)
    canvas = Image.new("RGB", (2 * size[0] + GAP_PX, size[1]), "white")
    canvas.paste(image.resize(size, Image.Resampling.NEAREST), (0, 0))
    canvas.paste(heat.resize(size, Image.Resampling.NEAREST), (size[0] + GAP_PX, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return canvas.size


def _shade(value: float, top: float) -> str:
    alpha = min(1.0, abs(value) / top) if top > 0 else 0.0
    colour = "214,39,40" if value > 0 else "31,119,180"
    return f"background: rgba({colour},{alpha:.3f})"


def token_row_html(tokens: list[str], values: list[float], heading: str) -> str:
    top = max((abs(v) for v in values), default=0.0)
    spans = "".join(
        f"<span class='tok' style='{_shade(v, top)}' title='{v:+.4g}'>{html.escape(t)}</span> "
        for t, v in zip(tokens, values, strict=True)
    )
    return f"<section><h2>{html.escape(heading)}</h2><p class='row'>{spans}</p></section>"


def token_page(title: str, rows: list[str]) -> str:
    return _PAGE.format(title=html.escape(title), rows="".join(rows))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 960px;
  padding: 0 1rem; color: #222; }}
h2 {{ font-size: 1rem; margin-bottom: .3rem; }} .note {{ color: #666; }}
.row {{ line-height: 2; }} .tok {{ padding: .1em .2em; border-radius: 3px; }}
</style></head><body>
<h1>{title}</h1>
<p class="note">Gradient x input at the token embeddings, summed over the embedding
dimension: <span style="background: rgba(214,39,40,.6)">red</span> raises the target
class's logit, <span style="background: rgba(31,119,180,.6)">blue</span> lowers it;
each row is scaled by its largest magnitude. Hover a token for its value.</p>
{rows}
</body></html>
"""
