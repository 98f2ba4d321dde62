"""OpenCV's ONNX route: `to-opencv --format onnx`, the OpenCV runner's engines, and verify catching the
classic engine's silent misreading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.errors import FacecvtError


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def bottleneck_frozen_graph():
    """A tiny embedding net ending as facenet's does: slim's batch norm of the 2-D bottleneck, folded,
    leaves Reshape(y, [-1, 1, 1, D]) + bias and a Reshape back to Shape(y). OpenCV's classic engine
    mis-reads that Shape -> Reshape in ONNX and returns wrong embeddings without an error."""
    from _tiny_graph import _freeze, _he

    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    rng = np.random.default_rng(5)
    conv = tf.Variable(_he(rng, (3, 3, 3, 16), 27))
    dense = tf.Variable(_he(rng, (16, 8), 16))
    bias = tf.Variable((rng.standard_normal(8) * 0.1).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="input")])
    def embed(x):
        x = tf.nn.relu(tf.nn.conv2d(x, conv, 2, "SAME"))
        x = tf.reshape(tf.nn.avg_pool2d(x, x.shape[1:3], 1, "VALID"), [-1, 16])
        y = tf.matmul(x, dense)
        z = tf.reshape(tf.reshape(y, [-1, 1, 1, 8]) + bias, tf.shape(y))
        return tf.math.l2_normalize(z, axis=1, epsilon=1e-10, name="embeddings")

    frozen = _freeze(embed, 8)
    frozen.input_shape = (None, 32, 32, 3)
    return frozen


@pytest.fixture(scope="session")
def bottleneck_pb(tmp_path_factory):
    path = tmp_path_factory.mktemp("cvonnx") / "bottleneck.pb"
    path.write_bytes(bottleneck_frozen_graph().graph_def.SerializeToString())
    return path


@pytest.fixture(scope="session")
def bottleneck_onnx(bottleneck_pb):
    out = bottleneck_pb.with_suffix(".onnx")
    result = invoke("to-opencv", bottleneck_pb, "-o", out)  # the format follows the suffix
    assert result.exit_code == 0, result.output
    return out


def test_to_opencv_format_onnx_writes_an_nchw_any_batch_model_the_new_engine_runs(tiny_pb, images, expected,
                                                                                   tmp_path):
    import cv2
    import onnx

    out = tmp_path / "tiny.onnx"
    result = invoke("to-opencv", tiny_pb, "-o", out, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "opencv ran batch 2" in result.stdout  # the load check ran OpenCV, not onnxruntime
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, 64, 64]
    net = cv2.dnn.readNetFromONNX(str(out), cv2.dnn.ENGINE_NEW)
    for count in (1, len(images)):
        net.setInput(np.ascontiguousarray(images[:count].transpose(0, 3, 1, 2)))
        np.testing.assert_allclose(net.forward(), expected[:count], atol=1e-5)


def test_to_opencv_format_must_match_the_output_suffix(tiny_pb, tmp_path):
    result = invoke("to-opencv", tiny_pb, "-o", tmp_path / "m.pb", "--format", "onnx")
    assert result.exit_code == 2
    assert "-o OUT.onnx" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_runs_opencv_onnx_on_the_new_engine_and_fails_it_on_the_classic_one(bottleneck_pb, bottleneck_onnx,
                                                                                    tmp_path):
    report_path = tmp_path / "report.json"
    good = invoke("verify", bottleneck_pb, f"opencv={bottleneck_onnx}", "--random", "6", "--json", report_path)
    assert good.exit_code == 0, good.output
    candidate = json.loads(report_path.read_text())["candidates"][0]
    assert candidate["backend"] == "opencv" and candidate["max_abs"] < 1e-5

    classic = invoke("verify", bottleneck_pb, f"opencv={bottleneck_onnx}", "--random", "6", "--engine", "classic")
    assert classic.exit_code == 1, classic.output
    assert "opencv" in classic.stderr and "max_abs" in classic.stderr


def test_a_bare_onnx_candidate_is_still_onnxruntimes(bottleneck_pb, bottleneck_onnx, tmp_path):
    report_path = tmp_path / "report.json"
    result = invoke("verify", bottleneck_pb, bottleneck_onnx, "--random", "2", "--json", report_path)
    assert result.exit_code == 0, result.output
    assert json.loads(report_path.read_text())["candidates"][0]["backend"] == "onnxruntime"


def test_opencv_runner_refuses_an_nhwc_onnx_and_names_the_export_to_use(tiny_pb, tmp_path):
    from facecvt.validate.runners.opencv import OpenCVRunner

    out = tmp_path / "nhwc.onnx"
    assert invoke("to-onnx", tiny_pb, "-o", out).exit_code == 0
    with pytest.raises(FacecvtError, match="to-opencv --format onnx"):
        OpenCVRunner(out)


def test_bundle_readme_shows_each_opencv_format_with_the_versions_that_read_it():
    from facecvt.workflows.bundle_readme import bundle_readme

    def artifact(target, files, layout):
        return {"target": target, "precision": "fp32", "files": [{"file": f} for f in files],
                "verify": {"max_abs": 1e-7, "min_cosine": 1.0}, "output": {"name": "embeddings", "embedding_size": 512},
                "input": {"name": "input", "layout": layout, "shape": [None, 3, 160, 160]}}

    manifest = {"source": {"path": "raw.pb"}, "facecvt": "x", "inputs": {"count": 61, "source": "faces"},
                "artifacts": [artifact("opencv", ["m.pb", "m.pbtxt"], "NCHW"),
                              artifact("opencv-onnx", ["m_opencv.onnx"], "NCHW")]}
    text = bundle_readme(manifest)
    assert 'cv2.dnn.readNetFromTensorflow("m.pb", "m.pbtxt")' in text
    assert 'cv2.dnn.readNetFromONNX("m_opencv.onnx", cv2.dnn.ENGINE_NEW)' in text
    assert "OpenCV 5.0 or later" in text and "4.x" in text
