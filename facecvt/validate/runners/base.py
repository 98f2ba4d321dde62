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

    @property
    def executed_by(self) -> str:
        """What actually ran the artifact: the backend's own runtime unless a runner says otherwise."""
        return self.backend


def as_nhwc_float32(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4:
        raise ValueError(f"expected an NHWC batch, got shape {batch.shape}")
    return np.ascontiguousarray(batch)


def run_in_fixed_batches(run, batch: np.ndarray, size: int | None) -> np.ndarray:
    """`run(batch)` for a dynamic batch (size None); else run chunks of `size`, the last one zero-padded."""
    if size is None or size == len(batch):
        return run(batch)
    chunks = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        padding = size - len(chunk)
        if padding:
            chunk = np.concatenate([chunk, np.zeros((padding, *chunk.shape[1:]), chunk.dtype)])
        chunks.append(run(chunk)[:size - padding])
    return np.concatenate(chunks)
