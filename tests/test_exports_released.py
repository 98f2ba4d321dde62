"""Every exporter on the released-weights sample, against graph_final.pb run in TensorFlow (61 faces)."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.validate.runners import load_runner

from conftest import read_graph_def, run_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def final_embeddings(graph_final_path, faces):
    """The classic recipe's graph (batch 1) run in TensorFlow: the embeddings every export must give."""
    return run_graph(read_graph_def(graph_final_path), faces, batch=1)


def embed(backend, path, faces, batch, **options):
    with load_runner(backend, path, **options) as runner:
        return np.concatenate([runner.embed(faces[i:i + batch]) for i in range(0, len(faces), batch)])


def min_cosine(a, b):
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("batch", [1, 8])
def test_onnx_matches_graph_final(released_export, faces, final_embeddings, batch):
    import onnx

    result = released_export("onnx")
    model = onnx.load(str(result.path), load_external_data=False)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic batch
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["embeddings"]
    assert np.abs(embed("onnxruntime", result.path, faces, batch) - final_embeddings).max() <= 1e-5


def test_tflite_fp32_matches_graph_final(released_export, faces, final_embeddings):
    result = released_export("tflite", "fp32")
    assert np.abs(embed("litert", result.path, faces, 8) - final_embeddings).max() <= 1e-5
    assert np.abs(embed("litert", result.path, faces, 1) - final_embeddings).max() <= 1e-5


def test_tflite_fp16_cosine(released_export, faces, final_embeddings):
    result = released_export("tflite", "fp16")
    assert min_cosine(embed("litert", result.path, faces, 8), final_embeddings) >= 0.9995


def test_tflite_int8_cosine_and_pair_accuracy(released_export, faces, face_paths, faces_dir, final_embeddings):
    from facecvt.convert.calibration import CalibrationImages
    from facecvt.validate import metrics
    from facecvt.validate.pairs import read_pairs

    calibration = CalibrationImages(faces_dir).at_size((160, 160))
    result = released_export("tflite", "int8", calibration=calibration)
    int8 = embed("litert", result.path, faces, 8)
    assert min_cosine(int8, final_embeddings) >= 0.99
    pairs = read_pairs(faces_dir / "pairs.csv", faces_dir)
    left, right = pairs.index_pairs(face_paths, resolve=True)
    labels = pairs.labels
    accuracy = {}
    for name, emb in (("reference", final_embeddings), ("int8", int8)):
        accuracy[name] = metrics.best_threshold(metrics.pair_distances(emb, left, right), labels)[1]
    assert accuracy["reference"] == 1.0
    assert accuracy["int8"] >= accuracy["reference"] - 0.01


def test_coreml_fp32_matches_graph_final(released_export, faces, final_embeddings):
    result = released_export("coreml", "fp32")
    assert np.abs(embed("coreml", result.path, faces[:16], 8) - final_embeddings[:16]).max() <= 1e-4


def test_coreml_fp16_cosine(released_export, faces, final_embeddings):
    result = released_export("coreml", "fp16")
    assert min_cosine(embed("coreml", result.path, faces[:16], 8), final_embeddings[:16]) >= 0.9995


@pytest.mark.parametrize("with_pbtxt", [True, False])
def test_opencv_matches_graph_final_in_opencv(released_export, faces, graph_final_path, with_pbtxt):
    result = released_export("opencv")
    classic = embed("opencv", graph_final_path, faces, 1)  # the classic recipe's graph only runs at batch 1
    options = {"pbtxt": result.extra_paths[0]} if with_pbtxt else {}
    assert np.abs(embed("opencv", result.path, faces, 1, **options) - classic).max() <= 1e-5
    assert np.abs(embed("opencv", result.path, faces, 8, **options) - classic).max() <= 1e-5
