"""Inputs for `verify`: image files of a folder or seeded random batches, preprocessed like FaceNet.

Everything here yields batches one at a time, so memory does not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecvt.core.errors import FacecvtError, did_you_mean

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PREPROCESS_MODES = ("fixed", "prewhiten", "none")


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The PNG/JPEG files of `folder` (and its subfolders if `recursive`), sorted by path."""
    folder = Path(folder)
    if not folder.exists():
        raise FacecvtError(f"images folder {folder} does not exist; pass --images with a folder of "
                           f"PNG/JPEG face crops")
    if not folder.is_dir():
        raise FacecvtError(f"--images {folder} is a file, not a folder; pass the folder that holds the images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        nested = [] if recursive else [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if nested:
            raise FacecvtError(f"no PNG/JPEG images directly in {folder} but {len(nested)} in its subfolders; "
                               f"read the folder recursively")
        raise FacecvtError(f"no PNG/JPEG images in {folder}; put face crops there or pass another folder")
    return paths


def load_image(path: str | Path, size_hw: Sequence[int] | None = None) -> np.ndarray:
    """The image at `path` as RGB uint8 (H, W, 3), resized bilinearly to `size_hw` when it differs."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise FacecvtError(f"image {path} does not exist; check the path or the images folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FacecvtError(f"cannot decode image {path} ({exc}); replace or remove the file") from None
    if size_hw is not None and None not in size_hw:
        height, width = int(size_hw[0]), int(size_hw[1])
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def prewhiten(batch: np.ndarray) -> np.ndarray:
    """facenet's per-image standardisation: (x - mean) / max(std, 1/sqrt(size)), per image."""
    x = np.asarray(batch, dtype=np.float64)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    size = np.prod(x.shape[1:])
    std_adj = np.maximum(std, 1.0 / np.sqrt(size))
    return ((x - mean) / std_adj).astype(np.float32)


def preprocess(batch_uint8: np.ndarray, mode: str) -> np.ndarray:
    """A float32 NHWC batch from uint8 images: "fixed" (x-127.5)/128, "prewhiten", or "none" (cast only)."""
    if mode == "fixed":
        return ((np.asarray(batch_uint8, dtype=np.float32) - 127.5) / 128.0).astype(np.float32)
    if mode == "prewhiten":
        return prewhiten(batch_uint8)
    if mode == "none":
        return np.asarray(batch_uint8, dtype=np.float32)
    raise FacecvtError(f"unknown preprocessing {mode!r}{did_you_mean(mode, PREPROCESS_MODES)}; "
                       f"use one of {', '.join(PREPROCESS_MODES)}")


def iter_image_batches(paths: Sequence[str | Path], size_hw: Sequence[int] | None, mode: str,
                       batch_size: int = 32) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Yield (paths_chunk, float32 NHWC batch) for `paths`, `batch_size` images at a time.

    `size_hw` None (or with a None) keeps each image's own size; they must then all agree.
    """
    if mode not in PREPROCESS_MODES:
        preprocess(np.zeros((0, 1, 1, 3), np.uint8), mode)  # raises the error naming the modes
    if batch_size < 1:
        raise FacecvtError(f"batch size must be at least 1, got {batch_size}")
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [load_image(p, size_hw) for p in chunk]
        _check_same_size(chunk, images)
        yield chunk, preprocess(np.stack(images), mode)


def _check_same_size(chunk: list[Path], images: list[np.ndarray]) -> None:
    first = images[0].shape
    for path, image in zip(chunk, images):
        if image.shape != first:
            raise FacecvtError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} but {chunk[0]} is {first[1]}x{first[0]} "
                f"and the model has no fixed input size; resize the images to one size")


def random_batches(n: int, shape_hwc: Sequence[int], seed: int = 0,
                   batch_size: int = 32) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (names, float32 NHWC batch) for `n` seeded random inputs, uniform in [-1, 1).

    That is the value range of images after "fixed" preprocessing. The values depend only on
    `seed` and the input index, not on `batch_size` (float64 draws are consumed in sequence).
    """
    if n < 1:
        raise FacecvtError(f"--random needs at least 1 input, got {n}")
    if batch_size < 1:
        raise FacecvtError(f"batch size must be at least 1, got {batch_size}")
    shape_hwc = tuple(int(s) for s in shape_hwc)
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        batch = rng.uniform(-1.0, 1.0, (count, *shape_hwc)).astype(np.float32)
        yield [f"random[{i}]" for i in range(start, start + count)], batch
