"""The one interface every backend runner has (after Polygraphy's runners)."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np


class Runner(abc.ABC):
    """Loads one artifact and embeds batches of preprocessed images.

    `embed` always takes NHWC float32 (N, H, W, C), already preprocessed, and returns the
    (N, D) float32 embeddings; a runner whose runtime wants NCHW transposes inside.
    Runners of a model with a fixed batch split larger batches themselves.
    """

    backend: str = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """NHWC shape the model takes, batch as None when dynamic."""

    @abc.abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) float32 of an NHWC float32 batch."""

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        return f"{self.backend}:{self.path}"


def as_nhwc_float32(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4:
        raise ValueError(f"expected an NHWC batch, got shape {batch.shape}")
    return np.ascontiguousarray(batch)
