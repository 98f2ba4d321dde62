"""The reference for the Keras tests: the Keras model itself, run with training=False, behind facecvt's
runner interface, so that `verify` judges every export against Keras (not against facecvt's own
frozen graph of it) with its per-precision and per-output limits."""

from __future__ import annotations

import numpy as np

from facecvt.validate.runners.base import Runner


class KerasRunner(Runner):
    """`model(batch, training=False)`; a dict of outputs is returned in `output_names` order."""

    backend = "tensorflow"

    def __init__(self, model, path, output_names=None):
        super().__init__(path)
        self.model = model
        names = output_names or (sorted(model.output) if isinstance(model.output, dict) else ["embedding"])
        self._output_names = list(names)

    @property
    def input_shape(self) -> tuple:
        return (None, *tuple(self.model.inputs[0].shape)[1:])

    def _infer(self, batch: np.ndarray) -> list:
        outputs = self.model(batch, training=False)
        if isinstance(outputs, dict):
            return [np.asarray(outputs[name]) for name in self._output_names]
        return [np.asarray(outputs)]

    @property
    def executed_by(self) -> str:
        return "keras (training=False)"
