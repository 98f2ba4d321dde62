"""Run an ONNX model with onnxruntime (CPU), NHWC or NCHW input, dynamic or fixed batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.validate.runners.base import Runner
from facecvt.core.threads import thread_budget


def _static(dim):
    """An ONNX dimension as an int, or None when it is symbolic or unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None


def is_nchw(shape) -> bool:
    """A 4-D image input is NCHW when its channels (3) are at dim 1 and not at dim 3."""
    return len(shape) == 4 and _static(shape[1]) == 3 and _static(shape[3]) != 3


class OnnxRuntimeRunner(Runner):
    """onnxruntime CPU session; takes NHWC batches and transposes them when the model is NCHW.

    `threads` sets intra_op_num_threads (None: onnxruntime's default). A model with a fixed
    batch size is run on chunks of that size, the last one padded.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        threads = threads or thread_budget()
        import onnxruntime

        super().__init__(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self._session = onnxruntime.InferenceSession(str(self.path), options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FacecvtError(f"onnxruntime cannot load {self.path}: {str(exc).strip().splitlines()[0]}") from exc
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._output_names = [output.name for output in self._session.get_outputs()]
        shape = [_static(d) for d in model_input.shape]
        if len(shape) != 4:
            raise FacecvtError(f"{self.path} takes a {len(shape)}-D input {model_input.shape}; "
                               "facecvt runs image models with a 4-D NHWC or NCHW input")
        self.nchw = is_nchw(model_input.shape)
        self._shape = (shape[0], shape[2], shape[3], shape[1]) if self.nchw else tuple(shape)

    @property
    def input_shape(self) -> tuple:
        return self._shape

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if self.nchw:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        try:
            outputs = self._session.run(self._output_names, {self._input_name: batch})
        except Exception as exc:
            raise FacecvtError(f"onnxruntime failed on {self.path} with a batch of shape {batch.shape}: "
                               f"{str(exc).strip().splitlines()[0]}") from exc
        return [np.asarray(output, dtype=np.float32) for output in outputs]

    def activations(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every node output of an in-memory copy of the model with all of them added as graph outputs."""
        import onnx
        import onnxruntime

        model = onnx.load(str(self.path))
        known = {output.name for output in model.graph.output}
        names = [name for node in model.graph.node for name in node.output if name and name not in known]
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = self.checked_batch(batch)
        if self.nchw:
            feed = np.ascontiguousarray(feed.transpose(0, 3, 1, 2))
        wanted = [output.name for output in session.get_outputs()]
        values = session.run(wanted, {self._input_name: feed})
        return {name: value for name, value in zip(wanted, values)
                if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)}

    def close(self) -> None:
        self._session = None
