"""Small models in the input forms other tools write, for the loaders' tests:

- a TF1 SavedModel (`SavedModelBuilder`, tag `serve`) of a raw *training* graph (phase_train cond,
  ref variables), as TF1 projects exported them;
- a TF2 SavedModel of a `tf.Module` whose only signature is not `serving_default` (or with a
  `serving_default` beside it that computes something else);
- a TF1 graph with two heads, a face embedding and a head pose, written with `tf.compat.v1`
  variables and `tf.nn` ops the way TF1 projects wrote multi-task face nets, frozen with
  `convert_variables_to_constants`;
- a `.pb` frozen the way facenet's `freeze_graph.py` freezes a net that is not Inception-ResNet-v1:
  only variables under one scope become constants, the others stay `VariableV2`; and the checkpoint
  it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecvt.core.tf_env import import_tf
from facecvt.samples.layers import TrainingLayers
from facecvt.samples.weights import RandomParams

IMAGE_SIZE = 16


def _tiny_training_net(tf, layers, images, scope: str = "Tiny"):
    net = layers.conv(images, 8, 3, f"{scope}/conv1", stride=2)
    net = tf.reduce_mean(net, axis=[1, 2], name=f"{scope}/pool")
    net = layers.dropout(net, 0.8, f"{scope}/Dropout")
    net = layers.dense(net, 8, f"{scope}/Bottleneck")
    return tf.math.l2_normalize(net, 1, 1e-10, name="embeddings")


def write_tf1_saved_model(folder: Path, images: np.ndarray, seed: int = 3) -> np.ndarray:
    """Save the tiny training graph as a TF1 SavedModel (signature `serving_default`: `images` ->
    `embeddings`); returns its embeddings of `images` with phase_train=False."""
    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        phase_train = tf.compat.v1.placeholder(tf.bool, shape=[], name="phase_train")
        inputs = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name="input")
        layers = TrainingLayers(RandomParams(seed), phase_train)
        embeddings = _tiny_training_net(tf, layers, inputs)
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"images": inputs}, outputs={"embeddings": embeddings})
    with tf.compat.v1.Session(graph=graph) as session:
        layers.initialize(session)
        expected = session.run(embeddings, {inputs: images, phase_train: False})
        builder = tf.compat.v1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return expected


def write_tf2_module_saved_model(folder: Path, signature: str = "embed", seed: int = 5, with_default: bool = False):
    """A `tf.saved_model.save`d tf.Module: conv, bias, relu, mean, dense; its signature `signature`
    returns {"vector": the dense output}. `with_default` adds `serving_default`, returning
    {"vector": the same vector L2-normalised}, so only the asked signature matches an export of it.
    Returns the module (call it for `signature`'s outputs, `.unit` for serving_default's)."""
    tf = import_tf()
    rng = np.random.default_rng(seed)

    class TinyFace(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
            self.bias = tf.Variable(rng.normal(0, 0.1, 8).astype(np.float32))
            self.dense = tf.Variable(rng.normal(0, 0.3, (8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="face")])
        def __call__(self, face):
            net = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(face, self.kernel, 1, "SAME"), self.bias))
            return {"vector": tf.matmul(tf.reduce_mean(net, axis=[1, 2]), self.dense)}

        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="face")])
        def unit(self, face):
            return {"vector": tf.math.l2_normalize(self.__call__(face)["vector"], axis=1)}

    module = TinyFace()
    signatures = {signature: module.__call__}
    if with_default:
        signatures["serving_default"] = module.unit
    tf.saved_model.save(module, str(folder), signatures=signatures)
    return module


TWO_HEAD_SIZE = 64
TWO_HEAD_OUTPUTS = ("face_embedding", "head_pose")  # (N, 128) L2-normalised, (N, 3) yaw, pitch, roll


def write_two_head_graph(out: Path, seed: int = 9) -> Path:
    """A multi-task face net as a TF1 project writes it: a shared conv trunk, an embedding head
    (1x1 conv, mean, dense, L2 norm: `face_embedding`, 128-D) and a head-pose head (strided conv,
    mean, dense: `head_pose`, 3 values); `get_variable` weights (truncated normal, biases 0.1, a
    graph-level seed) frozen to a `.pb` with `convert_variables_to_constants`. Input `image_batch`
    [None, 64, 64, 3]."""
    tf = import_tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        images = v1.placeholder(tf.float32, [None, TWO_HEAD_SIZE, TWO_HEAD_SIZE, 3], name="image_batch")

        def variables(shape, fan_in):
            weights = v1.get_variable("weights", shape, initializer=v1.truncated_normal_initializer(
                stddev=np.sqrt(2.0 / fan_in)))
            return weights, v1.get_variable("biases", shape[-1:], initializer=v1.constant_initializer(0.1))

        def conv(net, scope, size, channels, stride=1):
            with v1.variable_scope(scope):
                depth = int(net.shape[-1])
                kernel, bias = variables([size, size, depth, channels], size * size * depth)
                return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(net, kernel, [1, stride, stride, 1], "SAME"), bias))

        def dense(net, scope, units):
            with v1.variable_scope(scope):
                weights, bias = variables([int(net.shape[-1]), units], int(net.shape[-1]))
                return tf.nn.bias_add(tf.matmul(net, weights), bias)

        with v1.variable_scope("trunk"):
            net = conv(images, "conv1", 3, 16, stride=2)
            net = tf.nn.max_pool2d(net, 2, 2, "SAME")
            net = conv(net, "conv2", 3, 32)
        with v1.variable_scope("embedding_head"):
            features = tf.reduce_mean(conv(net, "conv", 1, 64), axis=[1, 2])
            embedding = tf.math.l2_normalize(dense(features, "bottleneck", 128), axis=1, epsilon=1e-10)
        tf.identity(embedding, name=TWO_HEAD_OUTPUTS[0])
        with v1.variable_scope("pose_head"):
            features = tf.reduce_mean(conv(net, "conv", 3, 16, stride=2), axis=[1, 2])
            pose = dense(features, "angles", 3)
        tf.identity(pose, name=TWO_HEAD_OUTPUTS[1])
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(),
                                                                  list(TWO_HEAD_OUTPUTS))
    out.write_bytes(frozen.SerializeToString())
    return out


def write_partly_frozen(out: Path, checkpoint_dir: Path, seed: int = 7) -> tuple[Path, Path]:
    """A net whose variables live under `Other/` as well as `Kept/`, frozen keeping only `Kept/`
    (facenet's freeze_graph whitelist), and the checkpoint folder it came from."""
    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        phase_train = tf.compat.v1.placeholder(tf.bool, shape=[], name="phase_train")
        images = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name="input")
        layers = TrainingLayers(RandomParams(seed), phase_train)
        net = layers.conv(images, 8, 3, "Other/conv0")
        _tiny_training_net(tf, layers, net, scope="Kept")
        saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session(graph=graph) as session:
        layers.initialize(session)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        saver.save(session, str(checkpoint_dir / "model.ckpt"))
        graph_def = graph.as_graph_def()
        from facecvt.core.checkpoint import rewrite_ref_ops

        rewrite_ref_ops(graph_def)
        kept = [n.name for n in graph_def.node if n.name.startswith("Kept/")]
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph_def, ["embeddings"], variable_names_whitelist=kept)
    out.write_bytes(frozen.SerializeToString())
    return out, checkpoint_dir
