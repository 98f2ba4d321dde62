"""Two inference batch norms in a row (Keras insightface's GDC batch norm, then the head's) fold into the
one conv before them; the second folds through the BiasAdd the first became."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.core.tf_env import import_tf
from facecvt.graph_ops import fold  # noqa: F401  (registers the passes)
from facecvt.graph_ops.registry import PASSES, PassContext

from conftest import run_graph


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_batch_norm_after_batch_norm_folds_exactly(kind):
    tf = import_tf()
    rng = np.random.default_rng(8)

    def bn_params():
        return [rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.normal(0, 0.3, 4).astype(np.float32),
                rng.normal(0, 0.3, 4).astype(np.float32), rng.uniform(0.5, 2.0, 4).astype(np.float32)]

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 4], name="input")
        if kind == "conv":
            y = tf.nn.conv2d(x, rng.normal(size=(3, 3, 4, 4)).astype(np.float32), 1, "VALID")
        else:
            y = tf.nn.depthwise_conv2d(x, rng.normal(size=(3, 3, 4, 1)).astype(np.float32), [1, 1, 1, 1], "VALID")
        for _ in range(2):
            scale, offset, mean, variance = bn_params()
            y = tf.raw_ops.FusedBatchNormV3(x=y, scale=scale, offset=offset, mean=mean, variance=variance,
                                            is_training=False)[0]
        tf.identity(y, name="embeddings")
    graph_def = graph.as_graph_def()
    images = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    before = run_graph(graph_def, images)
    summary = PASSES["fold_batch_norms"](graph_def, PassContext())
    PASSES["strip_unused"](graph_def, PassContext(output_names=["embeddings"]))
    assert summary == "folded 2 batch norms into weights"
    assert not any(n.op.startswith("FusedBatchNorm") or n.op == "Mul" for n in graph_def.node)
    after = run_graph(graph_def, images)
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()
