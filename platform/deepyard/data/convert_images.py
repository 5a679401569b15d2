"""A folder of images by class → Parquet (`deepyard data convert images SRC OUT`).

Data flow: SRC/<class_name>/*.png|jpg (class ids in sorted folder-name order) → Pillow,
one mode (`--channels` 1 = grayscale, 3 = RGB) and one size (`--size HxW`; default: the
first image's) → `features` float32 in [0, 1], shape [C, H, W] + `label` → ParquetSink.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from deepyard.data.convert import (
    ConvertOptions,
    ParquetSink,
    feature_array,
    refuse_options,
    table_metadata,
)
from deepyard.errors import DataError

SUFFIXES = {".png", ".jpg", ".jpeg"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CHUNK_IMAGES = 512


def convert_images(src: Path, out: Path, options: ConvertOptions) -> list[Path]:
    refuse_options("images", options, ["label", "features", "text", "label_names"])
    classes, files = scan_folder(src)
    height, width, channels = _target(files[0][0], options)
    shape = [channels, height, width]
    schema = pa.schema(
        [
            pa.field("features", pa.list_(pa.float32(), channels * height * width)),
            pa.field("label", pa.int64()),
        ],
        metadata=table_metadata(len(classes), classes, shape),
    )
    with ParquetSink(out, schema, 4 * channels * height * width) as sink:
        for start in range(0, len(files), CHUNK_IMAGES):
            chunk = files[start : start + CHUNK_IMAGES]
            pixels = np.stack([load_image(path, height, width, channels) for path, _ in chunk])
            labels = pa.array([label for _, label in chunk], pa.int64())
            sink.write(pa.RecordBatch.from_arrays([feature_array(pixels), labels], schema=schema))
    return sink.paths


def scan_folder(src: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class id)]) from SRC/<class_name>/*.png|jpg, sorted."""
    if not src.is_dir():
        raise DataError(f"{src} is not a folder; lay images out as {src}/<class_name>/*.png")
    classes: list[str] = []
    files: list[tuple[Path, int]] = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if images:
            files.extend((path, len(classes)) for path in images)
            classes.append(folder.name)
    if not files:
        raise DataError(
            f"{src} has no class folders with .png/.jpg images; lay them out as "
            f"{src}/<class_name>/*.png"
        )
    return classes, files


def _target(first: Path, options: ConvertOptions) -> tuple[int, int, int]:
    """(height, width, channels): the options, else the first image's own."""
    with _open(first) as image:
        width, height = image.size
        channels = 1 if image.mode in GRAY_MODES else 3
    if options.size is not None:
        height, width = options.size
    if options.channels is not None:
        if options.channels not in (1, 3):
            raise DataError(f"--channels {options.channels}: use 1 (grayscale) or 3 (RGB)")
        channels = options.channels
    return height, width, channels


def load_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """One image as float32 [C, H, W] in [0, 1]."""
    with _open(path) as image:
        try:
            converted = image.convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32) / 255.0
        except (OSError, ValueError) as exc:
            raise _unreadable(path, exc) from exc
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read image {path}: {exc}; delete or replace that file")
