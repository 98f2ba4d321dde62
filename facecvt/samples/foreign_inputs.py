"""Small models in the input forms other tools write, for the loaders' tests:

- a TF1 SavedModel (`SavedModelBuilder`, tag `serve`) of a raw *training* graph (phase_train cond,
  ref variables), as TF1 projects exported them;
- a TF2 SavedModel of a `tf.Module` whose only signature is not `serving_default` (or with a
  `serving_default` beside it that computes something else);
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
