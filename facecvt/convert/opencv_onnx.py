"""ONNX for OpenCV's new DNN engine: the ONNX export in NCHW, the layout `cv2.dnn.blobFromImages` makes.

OpenCV 5's new engine (cv2.dnn.ENGINE_NEW) reads the opset and ops tf2onnx writes for a face
embedding network (tested at opsets 13 to 18); the classic engine does not: it mis-reads the
Shape -> Reshape around slim's Bottleneck batch norm and returns wrong embeddings without an error.
The export workflow's load check opens the artifact on the new engine, the one users are told to use.
"""

from __future__ import annotations

from pathlib import Path

from facecvt.convert import onnx
from facecvt.core.frozen import FrozenGraph


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, opset: int | None = None,
          precision: str = "fp32") -> dict:
    """The ONNX export of `frozen` with an NCHW input and a symbolic batch (see convert/onnx.py)."""
    details = onnx.write(frozen, tmp_path, siblings, opset=opset, layout="nchw", precision=precision)
    return {**details, "opencv_engine": "new"}
