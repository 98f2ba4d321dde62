"""`facecvt sample facenet`: the raw training-mode FaceNet graph, as a frozen .pb or a checkpoint."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.samples.inception_resnet_v1 import inception_resnet_v1
from facecvt.samples.inception_resnet_v2 import inception_resnet_v2
from facecvt.samples.layers import TrainingLayers, facenet_input_queue
from facecvt.core.tf_env import import_tf

IMAGE_SIZE = 160
OUTPUTS = ("embeddings", "label_batch")
ARCHITECTURES = {"inception-resnet-v1": inception_resnet_v1, "inception-resnet-v2": inception_resnet_v2}


@dataclass
class SampleSpec:
    weights: str = "released"  # released | random
    embedding_size: int = 512
    seed: int = 0
    image_size: int = IMAGE_SIZE
    architecture: str = "inception-resnet-v1"

    def validate(self) -> None:
        if self.weights not in ("released", "random"):
            raise FacecvtError(f"--weights must be released or random, not {self.weights!r}")
        if self.architecture not in ARCHITECTURES:
            raise FacecvtError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, not {self.architecture!r}")
        if self.weights == "released" and self.architecture != "inception-resnet-v1":
            raise FacecvtError("the released weights are Inception-ResNet-v1's; use --weights random "
                               f"for {self.architecture}")
        if self.weights == "released" and self.embedding_size != 512:
            raise FacecvtError("the released weights are 512-D; use --embedding-size 512 or --weights random")


def _params(spec: SampleSpec):
    from facecvt.samples.weights import RandomParams, ReleasedParams, load_released_graph_def

    if spec.weights == "released":
        return ReleasedParams(load_released_graph_def(), seed=spec.seed)
    return RandomParams(seed=spec.seed)


@contextlib.contextmanager
def training_session(spec: SampleSpec):
    """A tf.compat.v1 session holding the training graph with its weights loaded."""
    spec.validate()
    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        phase_train = tf.compat.v1.placeholder(tf.bool, shape=[], name="phase_train")
        images, _labels, _batch = facenet_input_queue(tf, spec.image_size)
        layers = TrainingLayers(_params(spec), phase_train)
        prelogits = ARCHITECTURES[spec.architecture](layers, images, bottleneck_size=spec.embedding_size)
        tf.math.l2_normalize(prelogits, 1, 1e-10, name="embeddings")
        saver = tf.compat.v1.train.Saver(max_to_keep=1)
    with tf.compat.v1.Session(graph=graph) as session:
        layers.initialize(session)
        yield session, saver


def write_sample(spec: SampleSpec, out: Path, fmt: str = "pb") -> list[Path]:
    """Write the sample as facenet releases it: a frozen .pb, or a checkpoint folder."""
    from facecvt.core.atomic import atomic_output
    from facecvt.core.checkpoint import freeze_session

    if fmt not in ("pb", "checkpoint"):
        raise FacecvtError(f"--format must be pb or checkpoint, not {fmt!r}")
    with training_session(spec) as (session, saver), atomic_output(out) as tmp:
        if fmt == "pb":
            frozen = freeze_session(session, session.graph.as_graph_def(), OUTPUTS)
            tmp.write_bytes(frozen.SerializeToString())
        else:
            tmp.mkdir()
            saver.save(session, str(tmp / "model.ckpt"), write_meta_graph=True)
    return sorted(out.iterdir()) if out.is_dir() else [out]
