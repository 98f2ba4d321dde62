"""MTCNN's three detector nets (P-, R-, O-Net) built in TensorFlow from the released `det*.npy` weights.

This is the pipeline's *detector-net interface* and one implementation of it: a net is any object
with `run(batch_nhwc_float32) -> list[np.ndarray]` (its outputs, in order: face probability, box
regression, and for O-Net the ten landmark coordinates). The face pipeline only calls `run`, so the
runners of exported P/R/O-Net artifacts can replace these nets without touching it.

The nets take images already scaled as `(pixel - 127.5) * 0.0078125` and, like the Caffe models they
were trained as (in MATLAB, column-major), *transposed*: NWHC, the image's x axis first. The pipeline
does both (`face_pipeline.DetectorConfig`). Convolutions are VALID, PReLU is per channel, pooling
is Caffe's ceil mode (TensorFlow's SAME) except where it lands exactly (VALID), and the fully
connected layers flatten the (N, W', H', C) activation as it is: these weights (facenet's
`det*.npy`) were reordered for that. Measured on the shared faces (30 crops) against noise: with
transposed input and this flatten R-Net and O-Net give every face >= 0.99 and noise <= 0.012; with
the channels-first flatten `../shared/mtcnn/README.md` describes, or untransposed input, faces fall
to 0.02-0.3 and noise rises to 0.9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from facecvt.core.errors import FacecvtError

NET_FILES = {"pnet": "det1.npy", "rnet": "det2.npy", "onet": "det3.npy"}
# fixed input size of the refinement nets (P-Net takes any size)
NET_SIZES = {"pnet": None, "rnet": 24, "onet": 48}


class DetectorNet(Protocol):
    """What the face pipeline needs from a detector net."""

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs of an NHWC float32 batch, in order (prob, box[, landmarks])."""


def load_weights(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FacecvtError(f"MTCNN weights {path} do not exist; pass --mtcnn with the folder that holds "
                           f"det1.npy, det2.npy and det3.npy")
    try:
        weights = np.load(path, allow_pickle=True, encoding="latin1").item()
    except Exception as exc:  # a pickle of anything else: bad input, said in one line
        raise FacecvtError(f"cannot read MTCNN weights {path} ({type(exc).__name__}); "
                           f"use the released det1.npy..det3.npy") from None
    if not isinstance(weights, dict):
        raise FacecvtError(f"{path} is not an MTCNN weight file (expected a dict of layers)")
    return weights


def _layers(kind: str):
    """The layer list of each net: (op, name, args)."""
    if kind == "pnet":
        return [("conv", "conv1"), ("prelu", "PReLU1"), ("pool", 2, 2, "SAME"),
                ("conv", "conv2"), ("prelu", "PReLU2"),
                ("conv", "conv3"), ("prelu", "PReLU3")], [("conv_head", "conv4-1", "softmax"),
                                                          ("conv_head", "conv4-2", None)]
    if kind == "rnet":
        return [("conv", "conv1"), ("prelu", "prelu1"), ("pool", 3, 2, "SAME"),
                ("conv", "conv2"), ("prelu", "prelu2"), ("pool", 3, 2, "VALID"),
                ("conv", "conv3"), ("prelu", "prelu3"),
                ("flatten",), ("fc", "conv4"), ("prelu", "prelu4")], [("fc_head", "conv5-1", "softmax"),
                                                                       ("fc_head", "conv5-2", None)]
    if kind == "onet":
        return [("conv", "conv1"), ("prelu", "prelu1"), ("pool", 3, 2, "SAME"),
                ("conv", "conv2"), ("prelu", "prelu2"), ("pool", 3, 2, "VALID"),
                ("conv", "conv3"), ("prelu", "prelu3"), ("pool", 2, 2, "SAME"),
                ("conv", "conv4"), ("prelu", "prelu4"),
                ("flatten",), ("fc", "conv5"), ("prelu", "prelu5")], [("fc_head", "conv6-1", "softmax"),
                                                                       ("fc_head", "conv6-2", None),
                                                                       ("fc_head", "conv6-3", None)]
    raise FacecvtError(f"unknown MTCNN net {kind!r}; use pnet, rnet or onet")


class TensorFlowDetectorNet:
    """One MTCNN net as a TensorFlow function of an NHWC float32 batch."""

    def __init__(self, kind: str, weights: dict):
        from facecvt.core.tf_env import import_tf

        tf = import_tf()
        self.kind = kind
        body, heads = _layers(kind)
        missing = sorted({spec[1] for spec in body + heads if spec[0] in ("conv", "prelu", "fc", "conv_head",
                                                                             "fc_head")} - set(weights))
        if missing:
            raise FacecvtError(f"the {kind} weights lack layers {', '.join(missing)}; "
                               f"is this the right det*.npy file?")
        const = {name: {k: tf.constant(np.asarray(v, np.float32)) for k, v in layer.items()}
                 for name, layer in weights.items()}

        def forward(x):
            for spec in body:
                op = spec[0]
                if op == "conv":
                    layer = const[spec[1]]
                    x = tf.nn.conv2d(x, layer["weights"], 1, "VALID") + layer["biases"]
                elif op == "prelu":
                    alpha = const[spec[1]]["alpha"]
                    x = tf.nn.relu(x) - alpha * tf.nn.relu(-x)
                elif op == "pool":
                    x = tf.nn.max_pool2d(x, spec[1], spec[2], spec[3])
                elif op == "flatten":  # as stored (see the module docstring)
                    x = tf.reshape(x, (tf.shape(x)[0], -1))
                elif op == "fc":
                    layer = const[spec[1]]
                    x = tf.matmul(x, layer["weights"]) + layer["biases"]
            outputs = []
            for op, name, activation in heads:
                layer = const[name]
                if op == "conv_head":
                    y = tf.nn.conv2d(x, layer["weights"], 1, "VALID") + layer["biases"]
                else:
                    y = tf.matmul(x, layer["weights"]) + layer["biases"]
                outputs.append(tf.nn.softmax(y, axis=-1) if activation == "softmax" else y)
            return outputs

        size = NET_SIZES[kind]
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
        self._function = tf.function(forward, input_signature=[spec], autograph=False).get_concrete_function()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return [np.asarray(out) for out in self._function(batch)]


def load_tensorflow_nets(folder: str | Path) -> dict:
    """{'pnet', 'rnet', 'onet'} -> TensorFlowDetectorNet, from the det1..det3.npy of `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacecvtError(f"MTCNN folder {folder} does not exist; pass --mtcnn with the folder that holds "
                           f"det1.npy, det2.npy and det3.npy")
    return {kind: TensorFlowDetectorNet(kind, load_weights(folder / name)) for kind, name in NET_FILES.items()}
