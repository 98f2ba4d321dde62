"""Every exporter on graphs facecvt did not build from facenet: their exports compute the raw graph's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.workflows.export_artifact import export
from facecvt.graph_ops.pipeline import freeze
from facecvt.core.model import load_model
from facecvt.validate.runners import load_runner

from conftest import run_graph


@pytest.fixture(scope="session")
def classic_tf1_pb(models_dir):
    from facecvt.samples.mobile import write_classic_tf1_face

    return write_classic_tf1_face(models_dir / "classic_tf1.pb")


@pytest.fixture(scope="module", params=["mobile", "tf2", "classic_tf1"])
def graph(request, mobile_raw_pb, tf2_raw_pb, classic_tf1_pb):
    """(model, frozen graph, inputs, raw-graph embeddings) of one foreign graph."""
    path = {"mobile": mobile_raw_pb, "tf2": tf2_raw_pb, "classic_tf1": classic_tf1_pb}[request.param]
    model = load_model(path)
    frozen = freeze(model).frozen
    size = model.input_shape[1]
    rng = np.random.default_rng(5)
    coarse = rng.uniform(-1, 1, (6, size // 8, size // 8, 3))
    x = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.float32)  # smooth, image-like
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    feeds = {f"{name}:0": value for name, value in model.training_flags.items()}
    fixed = model.input_shape[0]
    expected = run_graph(model.graph_def, x, model.input_name, model.output_name, feeds=feeds, batch=fixed)
    return model, frozen, x, expected


def cosine(a, b):
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


TARGETS = [("opencv", "fp32", ".pb", "opencv"), ("onnx", "fp32", ".onnx", "onnxruntime"),
           ("onnx", "int8", ".onnx", "onnxruntime"),
           ("tflite", "fp32", ".tflite", "litert"), ("tflite", "fp16", ".tflite", "litert"),
           ("tflite", "int8", ".tflite", "litert"), ("coreml", "fp32", ".mlpackage", "coreml"),
           ("coreml", "fp16", ".mlpackage", "coreml")]


@pytest.mark.parametrize("target,precision,suffix,backend", TARGETS)
def test_export_matches_the_raw_graph(graph, target, precision, suffix, backend, tmp_path):
    model, frozen, x, expected = graph
    options = {"precision": precision} if target in ("tflite", "coreml") or precision == "int8" else {}
    if precision == "int8":
        options["calibration"] = [x]
    result = export(target, frozen, tmp_path / f"m{suffix}", **options)
    runner_options = {"pbtxt": result.extra_paths[0]} if target == "opencv" else {}
    with load_runner(backend, result.path, **runner_options) as runner:
        got = np.concatenate([runner.embed(x[:1]), runner.embed(x[1:])])  # batch 1 and a larger batch
    if precision == "fp32":
        assert np.abs(got - expected).max() <= (1e-4 if target == "coreml" else 1e-5)
    else:
        assert cosine(got, expected) >= (0.99 if precision == "int8" else 0.9995)


def test_classic_tf1_graph_freezes_its_unconditional_dropout_away(classic_tf1_pb):
    model = load_model(classic_tf1_pb)
    assert model.training_flags == {"keep_prob": 1.0, "phase_train": False} and model.input_shape[0] == 1
    result = freeze(model)
    ops = {n.op for n in result.frozen.graph_def.node}
    assert not ops & {"RandomUniform", "GreaterEqual", "SelectV2", "StatelessIf", "PlaceholderWithDefault"}
    assert result.frozen.input_shape == (None, 32, 32, 3)
