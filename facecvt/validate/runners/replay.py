"""Outputs computed by a runner in another process, replayed where they are compared.

`facecvt export` converts in worker processes. A worker that has just written an artifact has its
runtime loaded and idle cores around it, so it runs the artifact on verify's inputs there and sends
back a `Recording` (outputs by batch content); the parent compares them with the reference through
a `ReplayRunner` instead of loading every runtime again one after another. The comparison itself is
verify's own: it cannot tell a replayed candidate from a live one. A batch the recording lacks, and
anything beyond outputs (localisation's intermediate tensors), comes from the artifact itself,
opened in this process on first need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from facecvt.validate.runners.base import Runner


def batch_key(batch: np.ndarray) -> bytes:
    """A batch's identity: its shape and float32 contents."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    digest = hashlib.blake2b(str(batch.shape).encode(), digest_size=16)
    digest.update(batch.data)
    return digest.digest()


@dataclass
class Recording:
    """What a runner computed on some batches, and what verify asks of a runner besides outputs."""

    input_shape: tuple
    output_names: list
    executed_by: str
    outputs: dict = field(default_factory=dict)  # batch_key -> [array per output]


def record(runner: Runner, batches: Iterable[np.ndarray]) -> Recording:
    """Run every batch through `runner` and keep the outputs."""
    recording = Recording(tuple(runner.input_shape), list(runner.output_names), runner.executed_by)
    for batch in batches:
        recording.outputs[batch_key(batch)] = runner.run(batch)
    return recording


class ReplayRunner(Runner):
    """A runner answering from a `Recording`; `open_live()` opens the artifact itself when the
    recording cannot answer (a batch it lacks, intermediate tensors, any other runner attribute)."""

    def __init__(self, backend: str, path: str | Path, recording: Recording, open_live: Callable[[], Runner]):
        super().__init__(path)
        self.backend = backend
        self._recording = recording
        self._open_live = open_live
        self._live = None

    @property
    def input_shape(self) -> tuple:
        return self._recording.input_shape

    @property
    def output_names(self) -> list[str]:
        return list(self._recording.output_names)

    @property
    def executed_by(self) -> str:
        return self._recording.executed_by

    def live(self) -> Runner:
        if self._live is None:
            self._live = self._open_live()
        return self._live

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = self.checked_batch(batch)
        outputs = self._recording.outputs.get(batch_key(batch))
        if outputs is None:
            return self.live().run(batch)
        return [np.array(out, copy=True) for out in outputs]  # callers may change what they get

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.run(batch)

    def activations(self, batch: np.ndarray) -> dict:
        return self.live().activations(batch)

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None

    def __getattr__(self, name):
        """Everything else is the artifact's own runner's (opened on first use)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.live(), name)
