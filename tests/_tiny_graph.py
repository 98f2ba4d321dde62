"""A small clean face-embedding-like graph and image-like inputs for exporter tests.

The graph has the op mix of FaceNet's inference graph in miniature: conv + bias + relu,
depthwise conv, max pool, global average pool, dense and L2 normalisation; a
dynamic-batch Placeholder "input" [None, 64, 64, 3] and an output node "embeddings" (32-D).
"""

from __future__ import annotations

import numpy as np

from facecvt.core.frozen import FrozenGraph
from facecvt.core.tf_env import import_tf

IMAGE_SIZE = 64
EMBEDDING_SIZE = 32


def _he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def tiny_frozen_graph(seed: int = 0) -> FrozenGraph:
    """Build, freeze and wrap the tiny embedding network (He-initialised random weights)."""
    tf = import_tf()
    rng = np.random.default_rng(seed)
    weights = {
        "conv1": tf.Variable(_he(rng, (3, 3, 3, 16), 3 * 9)),
        "bias1": tf.Variable((rng.standard_normal(16) * 0.1).astype(np.float32)),
        "depthwise": tf.Variable(_he(rng, (3, 3, 16, 1), 9)),
        "conv2": tf.Variable(_he(rng, (1, 1, 16, 32), 16)),
        "bias2": tf.Variable((rng.standard_normal(32) * 0.1).astype(np.float32)),
        "dense": tf.Variable(_he(rng, (32, EMBEDDING_SIZE), 32)),
        "dense_bias": tf.Variable((rng.standard_normal(EMBEDDING_SIZE) * 0.1).astype(np.float32)),
    }

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="input")])
    def embed(x):
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights["conv1"], 2, "SAME"), weights["bias1"]))
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")
        x = tf.nn.relu(tf.nn.depthwise_conv2d(x, weights["depthwise"], [1, 1, 1, 1], "SAME"))
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights["conv2"], 1, "VALID"), weights["bias2"]))
        x = tf.nn.avg_pool2d(x, x.shape[1:3], 1, "VALID")
        x = tf.reshape(x, [-1, 32])
        x = tf.nn.bias_add(tf.matmul(x, weights["dense"]), weights["dense_bias"])
        return tf.math.l2_normalize(x, axis=1, epsilon=1e-10, name="embeddings")

    return _freeze(embed, EMBEDDING_SIZE)


def unconvertible_frozen_graph() -> FrozenGraph:
    """A clean graph with an op (Erfinv) that neither tf2onnx nor the TFLite builtins convert."""
    tf = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="input")])
    def embed(x):
        x = tf.math.erfinv(tf.tanh(tf.reduce_mean(x, axis=[1, 2])))
        return tf.math.l2_normalize(x, axis=1, name="embeddings")

    return _freeze(embed, 3)


def _freeze(function, embedding_size: int) -> FrozenGraph:
    tf = import_tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen_fn = convert_variables_to_constants_v2(function.get_concrete_function())
    # keep only what "embeddings" needs (drops the function's Identity/NoOp return nodes)
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(frozen_fn.graph.as_graph_def(), ["embeddings"])
    return FrozenGraph(graph_def, input_shape=(None, IMAGE_SIZE, IMAGE_SIZE, 3), embedding_size=embedding_size)


def reference_embeddings(frozen: FrozenGraph, batch: np.ndarray) -> np.ndarray:
    """Run the frozen GraphDef in TensorFlow (the reference every export is compared with)."""
    tf = import_tf()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(frozen.graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(f"{frozen.output_name}:0", {f"{frozen.input_name}:0": batch})


def smooth_images(count: int, size: int = IMAGE_SIZE, seed: int = 1) -> np.ndarray:
    """Image-like inputs in FaceNet's fixed preprocessing range: smooth colour blobs plus mild noise.

    Upsampled low-resolution noise gives the spatial correlation of real photos, which is what
    int8 calibration ranges must cover (white noise would have very different activations).
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)
    repeat = size // 8
    images = coarse.repeat(repeat, axis=1).repeat(repeat, axis=2)
    kernel = np.ones(repeat, np.float32) / repeat  # box blur along each axis softens the blocks
    for axis in (1, 2):
        images = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, images)
    images += rng.normal(0, 6, images.shape)
    return ((np.clip(images, 0, 255) - 127.5) / 128.0).astype(np.float32)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two embedding batches."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))
