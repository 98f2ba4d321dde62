"""A second, small face-embedding architecture (MobileFaceNet-like) with v1 training structure.

It exercises what Inception-ResNet-v1 does not: depthwise convolutions, PReLU, FusedBatchNorm
V1 and V3 side by side, an unfused batch norm on the 2-D embedding, a Mean global pool, a
plain Placeholder input named `data` and an `is_training` flag.
"""

from __future__ import annotations

from pathlib import Path

from facecvt.samples.layers import TrainingLayers
from facecvt.samples.weights import RandomParams
from facecvt.core.tf_env import import_tf

IMAGE_SIZE = 64


def _prelu(layers):
    return lambda y, scope: layers.prelu(y, scope.rstrip("/") + "/PReLU")


def mobile_face_graph(layers, images, embedding_size: int = 64):
    tf = layers.tf
    conv = layers.conv
    net = conv(images, 16, 3, "MobileFace/conv1", stride=2, activation=_prelu(layers))
    layers.bn_op = "FusedBatchNormV3"
    net = conv(net, 16, 3, "MobileFace/dw2", depthwise=True, activation=_prelu(layers))
    net = conv(net, 32, 1, "MobileFace/pw2")
    shortcut = conv(net, 64, 1, "MobileFace/expand3", activation=None)
    net = conv(net, 32, 3, "MobileFace/dw3", depthwise=True)
    net = conv(net, 64, 1, "MobileFace/pw3", activation=None)
    net = tf.nn.relu(tf.add(net, shortcut), name="MobileFace/residual")
    net = conv(net, 128, 3, "MobileFace/dw4", stride=2, depthwise=True, activation=_prelu(layers))
    layers.bn_op = "FusedBatchNorm"
    net = conv(net, 96, 1, "MobileFace/pw4")
    net = tf.reduce_mean(net, axis=[1, 2], name="MobileFace/global_pool")
    net = layers.dropout(net, 0.6, "MobileFace/Dropout")
    net = layers.dense(net, embedding_size, "MobileFace/embedding", normalize=False)
    net = layers.unfused_batch_norm(net, "MobileFace/embedding/")
    return tf.math.l2_normalize(net, 1, 1e-10, name="embeddings")


def write_mobile_face(out: Path, seed: int = 1, embedding_size: int = 64) -> Path:
    """Write the frozen raw training graph (facenet-style freeze) to `out`."""
    from facecvt.core.checkpoint import freeze_session

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        is_training = tf.compat.v1.placeholder(tf.bool, shape=[], name="is_training")
        images = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name="data")
        layers = TrainingLayers(RandomParams(seed), is_training)
        mobile_face_graph(layers, images, embedding_size)
    with tf.compat.v1.Session(graph=graph) as session:
        layers.initialize(session)
        frozen = freeze_session(session, graph.as_graph_def(), ["embeddings"])
    out.write_bytes(frozen.SerializeToString())
    return out


def write_tf2_face(out: Path, seed: int = 2, embedding_size: int = 32) -> Path:
    """A graph written by TF2: `tf.function` + `tf.cond` on a `training` input -> StatelessIf.

    Batch norms are FusedBatchNormV3 inside StatelessIf branches (batch statistics when
    training, moving ones otherwise); dropout is in an If (random ops are stateful); frozen
    with convert_variables_to_constants_v2.
    """
    import numpy as np
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf = import_tf()
    params = RandomParams(seed)

    def var(name, shape):
        return tf.Variable(params(name, shape).astype(np.float32), name=name)

    convs = [("c1", 3, 3, 3, 16, 2), ("c2", 3, 3, 16, 32, 1), ("c3", 3, 3, 32, 48, 2)]
    weights = {n: var(f"{n}/weights", (kh, kw, ci, co)) for n, kh, kw, ci, co, _ in convs}
    bn = {n: {k: var(f"{n}/BatchNorm/{k}", (co,)) for k in ("gamma", "beta", "moving_mean", "moving_variance")}
          for n, _, _, _, co, _ in convs}
    dense = var("fc/weights", (48, embedding_size))
    dense_b = var("fc/biases", (embedding_size,))

    def batch_norm(x, variables, training):
        p = {k: tf.identity(v) for k, v in variables.items()}  # read outside: branches stay stateless

        def train():
            return tf.raw_ops.FusedBatchNormV3(x=x, scale=p["gamma"], offset=p["beta"], mean=[], variance=[],
                                               epsilon=1e-3, is_training=True)[0]

        def infer():
            return tf.raw_ops.FusedBatchNormV3(x=x, scale=p["gamma"], offset=p["beta"], mean=p["moving_mean"],
                                               variance=p["moving_variance"], epsilon=1e-3, is_training=False)[0]

        return tf.cond(training, train, infer)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="input"),
                                  tf.TensorSpec([], tf.bool, name="training")])
    def model(images, training):
        net = images
        for name, _, _, _, _, stride in convs:
            net = tf.nn.conv2d(net, weights[name], stride, "SAME")
            net = tf.nn.relu(batch_norm(net, bn[name], training))
        net = tf.reduce_mean(net, axis=[1, 2])
        net = tf.cond(training, lambda: tf.nn.dropout(net, rate=0.2), lambda: tf.identity(net))
        net = tf.nn.bias_add(tf.linalg.matmul(net, dense), dense_b)
        return tf.math.l2_normalize(net, axis=1, epsilon=1e-10, name="embeddings")

    concrete = model.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    out.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return out


def tiny_training_graph_def(seed: int = 3, image_size: int = 16, embedding_size: int = 8):
    """A very small raw training graph (conv + cond'ed batch norm + dropout + dense + L2), for fuzzing."""
    from facecvt.core.checkpoint import freeze_session

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        phase_train = tf.compat.v1.placeholder(tf.bool, shape=[], name="phase_train")
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="input")
        layers = TrainingLayers(RandomParams(seed), phase_train)
        net = layers.conv(images, 8, 3, "Tiny/conv1", stride=2)
        net = tf.reduce_mean(net, axis=[1, 2], name="Tiny/pool")
        net = layers.dropout(net, 0.8, "Tiny/Dropout")
        net = layers.dense(net, embedding_size, "Tiny/Bottleneck")
        tf.math.l2_normalize(net, 1, 1e-10, name="embeddings")
    with tf.compat.v1.Session(graph=graph) as session:
        layers.initialize(session)
        return freeze_session(session, graph.as_graph_def(), ["embeddings"])


def write_classic_tf1_face(out: Path, seed: int = 4, embedding_size: int = 16) -> Path:
    """An old-style TF1 graph: input `img` fixed at batch 1, `tf.nn.dropout` driven by a `keep_prob`
    placeholder (its random mask computed unconditionally), a `phase_train` PlaceholderWithDefault
    selecting a branch through a TF2 cond, and the flatten reshape baked to batch 1."""
    import numpy as np

    tf = import_tf()
    params = RandomParams(seed)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 32, 32, 3], name="img")
        keep_prob = tf.compat.v1.placeholder(tf.float32, [], name="keep_prob")
        phase_train = tf.compat.v1.placeholder_with_default(False, [], name="phase_train")
        weights = params("conv/weights", (3, 3, 3, 8)).astype(np.float32)
        net = tf.nn.relu(tf.nn.conv2d(images, weights, 2, "SAME"))
        net = tf.reshape(net, [1, -1])
        net = tf.compat.v1.nn.dropout(net, keep_prob=keep_prob)
        net = tf.linalg.matmul(net, params("fc/weights", (16 * 16 * 8, embedding_size)).astype(np.float32))
        net = tf.cond(phase_train, lambda: net * 2.0, lambda: net)
        tf.math.l2_normalize(net, 1, 1e-10, name="embeddings")
    out.write_bytes(graph.as_graph_def().SerializeToString())
    return out
