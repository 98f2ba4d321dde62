"""The three MTCNN face-detector networks (P-, R-, O-Net) as frozen TF1 graphs, from the released
weights in `../shared/mtcnn/det{1,2,3}.npy`.

Written the way facenet's `detect_face.py` builds them: TF1 ops under `pnet/`, `rnet/`, `onet/`
with facenet's node names (`pnet/conv1/Conv2D`, `rnet/conv5-2/conv5-2`, `onet/prob1`...), PReLU
as `relu(x) + alpha * -relu(-x)`, the softmax spelled out (max, exp, sum, div). Weights are
constants (a frozen graph).

The released weights came from Caffe, and facenet feeds the nets images with height and width
swapped (`np.transpose(img, (0, 2, 1, 3))`, i.e. (N, W, H, C)) and flattens the activation before
the fully connected layers as it is (NHWC). That is the convention these weights work in: so fed,
O-Net gives each of the 61 shared face crops a face probability >= 0.96 and random noise <= 0.02;
with a channels-first (NCHW) flatten instead, on upright or transposed images, faces got 0.40-0.99
and noise up to 0.76. So the graphs take images as facenet feeds them; `preprocess` scales and
transposes (and P-Net's output maps are then W'xH', as facenet reads them).

| net  | input          | outputs (facenet's names)                                      |
|------|----------------|----------------------------------------------------------------|
| pnet | (N, ?, ?, 3)   | `pnet/prob1` (N,H',W',2), `pnet/conv4-2/BiasAdd` (N,H',W',4)   |
| rnet | (N, 24, 24, 3) | `rnet/prob1` (N,2), `rnet/conv5-2/conv5-2` (N,4)               |
| onet | (N, 48, 48, 3) | `onet/prob1` (N,2), `onet/conv6-2/conv6-2` (N,4), `onet/conv6-3/conv6-3` (N,10) |

Inputs are RGB images scaled `(pixel - 127.5) * 0.0078125`, height and width swapped (`preprocess`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.tf_env import import_tf

NETS = {"pnet": ("det1.npy", None), "rnet": ("det2.npy", 24), "onet": ("det3.npy", 48)}
OUTPUTS = {"pnet": ["pnet/prob1", "pnet/conv4-2/BiasAdd"],
           "rnet": ["rnet/prob1", "rnet/conv5-2/conv5-2"],
           "onet": ["onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3"]}
INPUT_SCALE, INPUT_MEAN = 0.0078125, 127.5


def weights_folder() -> Path:
    """`../shared/mtcnn` beside the repository, or $FACECVT_MTCNN."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "mtcnn"
    return Path(os.environ.get("FACECVT_MTCNN", default))


def load_weights(net: str, folder: Path | None = None) -> dict:
    """{layer: {"weights", "biases"} | {"alpha"}} of one net, as the released .npy holds them."""
    path = Path(folder or weights_folder()) / NETS[net][0]
    if not path.is_file():
        raise FacecvtError(f"the MTCNN weights {path} are missing; point FACECVT_MTCNN at the folder holding "
                           f"det1.npy, det2.npy and det3.npy")
    try:
        weights = np.load(path, allow_pickle=True, encoding="latin1").item()
    except Exception as exc:  # a pickle of anything else: bad input, said in one line
        raise FacecvtError(f"cannot read MTCNN weights {path} ({type(exc).__name__}); "
                           f"use the released det1.npy..det3.npy") from None
    if not isinstance(weights, dict):
        raise FacecvtError(f"{path} is not an MTCNN weight file (expected a dict of layers)")
    return weights


class _Builder:
    """facenet's `Network` layer helpers, with the weights as constants."""

    def __init__(self, tf, weights: dict):
        self.tf, self.weights = tf, weights

    def _const(self, layer: str, key: str):
        return self.tf.constant(np.asarray(self.weights[layer][key], np.float32), name=key)

    def conv(self, x, name: str, padding: str = "VALID"):
        tf = self.tf
        with tf.compat.v1.variable_scope(name):
            kernel, biases = self._const(name, "weights"), self._const(name, "biases")
            y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], padding=padding)
            return tf.nn.bias_add(y, biases)

    def prelu(self, x, name: str):
        tf = self.tf
        with tf.compat.v1.variable_scope(name):
            alpha = self._const(name, "alpha")
            return tf.nn.relu(x) + tf.multiply(alpha, -tf.nn.relu(-x))

    def max_pool(self, x, size: int, stride: int, name: str, padding: str = "SAME"):
        return self.tf.nn.max_pool(x, [1, size, size, 1], [1, stride, stride, 1], padding=padding, name=name)

    def fc(self, x, name: str):
        tf = self.tf
        with tf.compat.v1.variable_scope(name):
            if x.shape.rank == 4:  # facenet's flatten of the (transposed-image) NHWC activation
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
            weights, biases = self._const(name, "weights"), self._const(name, "biases")
            return tf.compat.v1.nn.xw_plus_b(x, weights, biases, name=name)

    def softmax(self, x, axis: int, name: str):
        tf = self.tf
        top = tf.reduce_max(x, axis, keepdims=True)
        exp = tf.exp(x - top)
        return tf.math.divide(exp, tf.reduce_sum(exp, axis, keepdims=True), name=name)


def _pnet(b, x):
    x = b.prelu(b.conv(x, "conv1"), "PReLU1")
    x = b.max_pool(x, 2, 2, "pool1")
    x = b.prelu(b.conv(x, "conv2"), "PReLU2")
    x = b.prelu(b.conv(x, "conv3"), "PReLU3")
    b.softmax(b.conv(x, "conv4-1", "SAME"), 3, "prob1")
    b.conv(x, "conv4-2", "SAME")


def _rnet(b, x):
    x = b.max_pool(b.prelu(b.conv(x, "conv1"), "prelu1"), 3, 2, "pool1")
    x = b.max_pool(b.prelu(b.conv(x, "conv2"), "prelu2"), 3, 2, "pool2", "VALID")
    x = b.prelu(b.conv(x, "conv3"), "prelu3")
    x = b.prelu(b.fc(x, "conv4"), "prelu4")
    b.softmax(b.fc(x, "conv5-1"), 1, "prob1")
    b.fc(x, "conv5-2")


def _onet(b, x):
    x = b.max_pool(b.prelu(b.conv(x, "conv1"), "prelu1"), 3, 2, "pool1")
    x = b.max_pool(b.prelu(b.conv(x, "conv2"), "prelu2"), 3, 2, "pool2", "VALID")
    x = b.max_pool(b.prelu(b.conv(x, "conv3"), "prelu3"), 2, 2, "pool3")
    x = b.prelu(b.conv(x, "conv4"), "prelu4")
    x = b.prelu(b.fc(x, "conv5"), "prelu5")
    b.softmax(b.fc(x, "conv6-1"), 1, "prob1")
    b.fc(x, "conv6-2")
    b.fc(x, "conv6-3")


def mtcnn_graph_def(net: str, folder: Path | None = None):
    """The frozen GraphDef of `net` ("pnet", "rnet" or "onet"); its input is `<net>/input`."""
    if net not in NETS:
        raise FacecvtError(f"unknown MTCNN net {net!r}; choose pnet, rnet or onet")
    tf = import_tf()
    weights = load_weights(net, folder)
    builder = _Builder(tf, weights)
    size = NETS[net][1]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.variable_scope(net):
        images = tf.compat.v1.placeholder(tf.float32, (None, size, size, 3), "input")
        try:
            {"pnet": _pnet, "rnet": _rnet, "onet": _onet}[net](builder, images)
        except (KeyError, TypeError, ValueError) as exc:
            raise FacecvtError(f"the {net} weights do not fit the net ({type(exc).__name__}: {exc}); "
                               f"is {NETS[net][0]} the released file?") from None
    graph_def = graph.as_graph_def()
    names = {n.name for n in graph_def.node}
    missing = [o for o in OUTPUTS[net] if o not in names]
    assert not missing, missing  # the documented output names are the graph's
    return graph_def


def write_mtcnn(net: str, out: Path, folder: Path | None = None) -> Path:
    out = Path(out)
    out.write_bytes(mtcnn_graph_def(net, folder).SerializeToString())
    return out


def preprocess(images: np.ndarray) -> np.ndarray:
    """RGB pixels (N, H, W, 3), 0-255 -> the nets' input: scaled, height and width swapped (facenet's way)."""
    scaled = (np.asarray(images, np.float32) - INPUT_MEAN) * INPUT_SCALE
    return np.ascontiguousarray(scaled.transpose(0, 2, 1, 3)).astype(np.float32)
