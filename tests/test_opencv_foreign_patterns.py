"""OpenCV export of patterns other people's graphs use: each fails without its fix, and matches TensorFlow with it.

- facenet's MTCNN writes PReLU as relu(x) + alpha * (-relu(-x));
- a TF2 `tf.cond` on a training flag whose branch holds an unfused tf.nn.batch_normalization: the
  inlined branch comes after its users in the GraphDef, and `variance + epsilon` must still fold.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from facecvt.core.model import load_model  # noqa: E402
from facecvt.core.tf_env import import_tf  # noqa: E402
from facecvt.graph_ops.pipeline import freeze  # noqa: E402
from facecvt.validate.runners.opencv import OpenCVRunner  # noqa: E402
from facecvt.workflows.export_artifact import export  # noqa: E402

from conftest import run_graph  # noqa: E402

tf = import_tf()
SIZE = 24


def _frozen_pb(function, tmp_path):
    """`function`'s concrete graph, variables made constants, written as a raw .pb (conds kept functional)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph_def = convert_variables_to_constants_v2(function.get_concrete_function(),
                                                  lower_control_flow=False).graph.as_graph_def()
    path = tmp_path / "raw.pb"
    path.write_bytes(graph_def.SerializeToString())
    return path


def _conv(x, out_channels, seed):
    rng = np.random.default_rng(seed)
    kernel = (rng.standard_normal((3, 3, int(x.shape[-1]), out_channels)) * 0.4).astype(np.float32)
    return tf.nn.conv2d(x, kernel, 1, "SAME")


def _images(count=4):
    return np.random.default_rng(9).uniform(-1, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def _export_and_compare(path, tmp_path, feeds=None):
    """Freeze `path`, export it to OpenCV, run the .pb with its .pbtxt: max |diff| to TensorFlow on the raw graph."""
    model = load_model(path)
    x = _images()
    expected = run_graph(model.graph_def, x, feeds=feeds)
    result = export("opencv", freeze(model).frozen, tmp_path / "model.pb")
    with OpenCVRunner(result.path, pbtxt=result.extra_paths[0]) as runner:
        got = runner.embed(x)
    return result, float(np.max(np.abs(got - expected)))


MTCNN_PRELUS = {
    "as_written": lambda h, alpha: tf.nn.relu(h) + tf.multiply(alpha, -tf.nn.relu(-h)),
    "operands_swapped": lambda h, alpha: tf.multiply(-tf.nn.relu(-h), alpha) + tf.nn.relu(h),
}


@pytest.mark.parametrize("form", MTCNN_PRELUS)
def test_prelu_with_negated_relu_of_the_negative_part(form, tmp_path):
    """MTCNN's PReLU: tf.nn.relu(x) + tf.multiply(alpha, -tf.nn.relu(-x)), alpha a trained variable."""
    alpha = tf.Variable(np.linspace(0.05, 0.4, 6).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="input")])
    def model(x):
        h = MTCNN_PRELUS[form](_conv(x, 6, seed=1), alpha)
        return tf.identity(tf.reduce_mean(_conv(h, 4, seed=2), [1, 2]), name="embeddings")

    result, diff = _export_and_compare(_frozen_pb(model, tmp_path), tmp_path)
    assert result.details["text_graph_ops"].get("PReLU") == 1
    assert diff <= 1e-5


def test_unfused_batch_norm_in_a_stateless_if_branch(tmp_path):
    """tf.cond(training, ...) with tf.nn.batch_normalization on constant statistics in the inference branch."""
    rng = np.random.default_rng(3)
    mean = tf.Variable(rng.normal(size=6).astype(np.float32))
    variance = tf.Variable(rng.uniform(0.5, 2.0, 6).astype(np.float32))
    offset, scale = rng.normal(size=6).astype(np.float32), rng.uniform(0.5, 2.0, 6).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="input"),
                                  tf.TensorSpec([], tf.bool, name="training")])
    def model(x, training):
        h = _conv(x, 6, seed=4)

        def train():
            batch_mean, batch_variance = tf.nn.moments(h, [0, 1, 2])
            return tf.nn.batch_normalization(h, batch_mean, batch_variance, offset, scale, 1e-3)

        def infer():
            return tf.nn.batch_normalization(h, mean, variance, offset, scale, 1e-3)

        h = tf.nn.relu(tf.cond(training, train, infer))
        return tf.identity(tf.reduce_mean(h, [1, 2]), name="embeddings")

    path = _frozen_pb(model, tmp_path)
    assert {"If", "StatelessIf"} & {n.op for n in load_model(path).graph_def.node}
    result, diff = _export_and_compare(path, tmp_path, feeds={"training:0": False})
    assert not {"AddV2", "Rsqrt", "Sub"} & set(result.details["ops"])  # folded into the conv's weights and bias
    assert diff <= 1e-5
