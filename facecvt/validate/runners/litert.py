"""Run a .tflite model with the LiteRT interpreter (ai_edge_litert), float or quantised I/O."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.validate.runners.base import Runner
from facecvt.core.threads import thread_budget


def quantize(values: np.ndarray, details: dict) -> np.ndarray:
    """Float values -> the tensor's integer type with its (scale, zero point); floats pass through."""
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if not np.issubdtype(dtype, np.integer) or not scale:
        return values.astype(dtype, copy=False)
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    """A quantised tensor back to float32 with its (scale, zero point); floats pass through."""
    scale, zero_point = details["quantization"]
    if not np.issubdtype(values.dtype, np.integer) or not scale:
        return values.astype(np.float32, copy=False)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTRunner(Runner):
    """LiteRT interpreter; resizes its input to each new batch size (dynamic batch models).

    `threads` is the interpreter's num_threads (None: every core, as the other runtimes use;
    LiteRT's own default is one thread). A fixed-batch model
    is run on chunks of its batch size. Quantised inputs/outputs are converted with their
    scale and zero point, so `embed` is float32 in and out for every model.
    """

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None):
        threads = threads or thread_budget()
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path)
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads or os.cpu_count())
            self._input = self._interpreter.get_input_details()[0]
            # a free height/width (-1) would be allocated at 1x1, too small for a conv net: such a
            # model is allocated at the first batch's size instead
            free_size = any(int(d) < 0 for d in self._input["shape_signature"][1:3])
            if not free_size:
                self._interpreter.allocate_tensors()
        except Exception as exc:
            raise FacecvtError(f"LiteRT cannot load {self.path}: {str(exc).strip().splitlines()[0]}") from exc
        # dtype and quantisation do not change when the input is resized: read them once
        # the converter lists outputs in its own order; tensor indices follow the graph's, and the
        # names (kept by the converter) are what callers match on
        self._outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["index"])
        self._output_names = [d["name"] for d in self._outputs]
        self._allocated_shape = None if free_size else tuple(int(d) for d in self._input["shape"])
        signature = [int(d) for d in self._input["shape_signature"]]
        if len(signature) != 4:
            raise FacecvtError(f"{self.path} takes a {len(signature)}-D input {signature}; "
                               "facecvt runs image models with a 4-D NHWC input")
        self._shape = tuple(d if d > 0 else None for d in signature)

    @property
    def input_shape(self) -> tuple:
        return self._shape

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter
        try:
            if batch.shape != self._allocated_shape:
                interpreter.resize_tensor_input(self._input["index"], batch.shape, strict=True)
                interpreter.allocate_tensors()
                self._allocated_shape = batch.shape
            interpreter.set_tensor(self._input["index"], quantize(batch, self._input))
            interpreter.invoke()
            outputs = [interpreter.get_tensor(d["index"]) for d in self._outputs]
        except (ValueError, RuntimeError) as exc:
            raise FacecvtError(f"LiteRT failed on {self.path} with a batch of shape {batch.shape}: "
                               f"{str(exc).strip().splitlines()[0]}") from exc
        return [dequantize(output, d) for output, d in zip(outputs, self._outputs)]

    def activations(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every op's output tensor, dequantised, from an interpreter that preserves all tensors."""
        from ai_edge_litert.interpreter import Interpreter

        batch = self.checked_batch(batch)
        interpreter = Interpreter(model_path=str(self.path), experimental_preserve_all_tensors=True,
                                  num_threads=os.cpu_count())
        if None in self._shape:
            interpreter.resize_tensor_input(self._input["index"], batch.shape, strict=True)
        interpreter.allocate_tensors()
        interpreter.set_tensor(self._input["index"], quantize(batch, self._input))
        interpreter.invoke()
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        produced = {index for op in interpreter._get_ops_details() for index in op["outputs"]}  # noqa: SLF001
        return {details[i]["name"]: dequantize(interpreter.get_tensor(i), details[i]) for i in sorted(produced)
                if i in details}

    def close(self) -> None:
        self._interpreter = None
