"""The one interface every backend runner has (after Polygraphy's runners)."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError


class Runner(abc.ABC):
    """Loads one artifact and runs batches of preprocessed images.

    `run` takes NHWC float32 (N, H, W, C), already preprocessed, and returns every output of the
    model, in `output_names` order, as float32 arrays (N, ...) laid out as TensorFlow lays them out.
    `embed` is the single-output view: the (N, D) embeddings. Both are written once, here: the
    batch is checked, split into the model's fixed batch (the last chunk zero-padded, the
    padding's rows dropped) or into chunks of at most `max_chunk` images, and concatenated. A
    backend implements only `_infer`, its runtime's call on one chunk returning all outputs; a
    runtime that wants NCHW transposes there. A model whose height and width are free takes any
    size (one size per call).

    A backend that can expose intermediate tensors also implements `activations(batch)`
    (name -> array, as its runtime names and lays them out) for `facecvt.validate.localize`.
    """

    backend: str = ""
    max_chunk: int | None = None  # images per _infer call for a dynamic batch (None: the whole batch)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """NHWC shape the model takes, batch as None when dynamic."""

    @property
    def output_names(self) -> list[str]:
        """The model's outputs as its runtime names them, in the order `run` returns them."""
        return list(self._output_names) or ["output"]

    _output_names: list = []  # set by a backend from its model; empty for a runner of one unnamed output

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output (in `output_names` order) for one NHWC float32 chunk of the size `run` chose
        (a runner of a single-output model may return the one array itself)."""

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for an NHWC float32 batch: float32 arrays (N, ...)."""
        batch = self.checked_batch(batch)
        fixed = self.input_shape[0]
        size = fixed or self.max_chunk or max(len(batch), 1)
        chunks = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            count = len(chunk)
            if fixed and count < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - count, *chunk.shape[1:]), np.float32)])
            outputs = self._infer(chunk)
            outputs = [outputs] if isinstance(outputs, np.ndarray) else outputs
            chunks.append([np.asarray(out)[:count] for out in outputs])
        if not chunks:
            return [np.zeros((0, 0), np.float32) for _ in self.output_names]
        return [np.concatenate(parts).astype(np.float32, copy=False) for parts in zip(*chunks)]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) float32 of an NHWC float32 batch (a single-output model)."""
        outputs = self.run(batch)
        if len(outputs) != 1:
            raise FacecvtError(f"{self.path} has {len(outputs)} outputs ({', '.join(self.output_names)}); "
                               f"an embedding model has one: use run() for all of them")
        first = outputs[0]
        return first.reshape(len(first), -1) if len(first) else np.zeros((0, 0), np.float32)

    def checked_batch(self, batch: np.ndarray) -> np.ndarray:
        """`batch` as contiguous NHWC float32, its image size checked against the model's."""
        batch = as_nhwc_float32(batch)
        expected = tuple(self.input_shape[1:4])
        if any(e is not None and e != got for e, got in zip(expected, batch.shape[1:])):
            raise FacecvtError(f"{self.path} takes images of shape {expected} (HWC), got {batch.shape[1:]}")
        return batch

    def activations(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every intermediate tensor the runtime can expose for `batch`: name -> array."""
        raise NotImplementedError(f"{self.backend} cannot expose intermediate tensors")

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
