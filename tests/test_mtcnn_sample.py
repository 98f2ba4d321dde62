"""`facecvt sample mtcnn`: the three MTCNN nets from the released weights, as frozen graphs with their real outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.samples.mtcnn import OUTPUTS, mtcnn_graph_def, preprocess, weights_folder

from conftest import faces_folder, read_graph_def, run_graph


@pytest.fixture(scope="module")
def face_crops() -> list:
    """The shared face crops: missing data is a failure, not a skip."""
    paths = sorted(faces_folder().glob("*.png"))
    assert len(paths) >= 8, f"the shared face crops are missing from {faces_folder()}"
    assert (weights_folder() / "det3.npy").is_file(), f"the MTCNN weights are missing from {weights_folder()}"
    return paths[:12]


def resized(paths, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])


@pytest.fixture(scope="module")
def onet_pb(tmp_path_factory, face_crops) -> Path:
    out = tmp_path_factory.mktemp("mtcnn") / "onet.pb"
    result = CliRunner().invoke(main, ["sample", "mtcnn", "--net", "onet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_onet_finds_faces_and_not_noise(onet_pb, face_crops):
    graph_def = read_graph_def(onet_pb)
    faces = run_graph(graph_def, preprocess(resized(face_crops, 48)), "onet/input", "onet/prob1")
    noise = preprocess(np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 3)))
    noise_prob = run_graph(graph_def, noise, "onet/input", "onet/prob1")
    assert faces[:, 1].min() > 0.9, faces[:, 1]
    assert noise_prob[:, 1].max() < faces[:, 1].min() and noise_prob[:, 1].mean() < 0.5
    assert np.allclose(faces.sum(1), 1, atol=1e-5)
    boxes = run_graph(graph_def, preprocess(resized(face_crops, 48)), "onet/input", "onet/conv6-2/conv6-2")
    landmarks = run_graph(graph_def, preprocess(resized(face_crops, 48)), "onet/input", "onet/conv6-3/conv6-3")
    assert boxes.shape == (len(face_crops), 4) and landmarks.shape == (len(face_crops), 10)
    # landmarks are fractions of the box: the five x then the five y inside it
    assert 0 < landmarks.mean() < 1


def test_rnet_scores_faces_and_pnet_runs_at_two_sizes(face_crops):
    rnet = mtcnn_graph_def("rnet")
    prob = run_graph(rnet, preprocess(resized(face_crops, 24)), "rnet/input", "rnet/prob1")
    assert prob[:, 1].min() > 0.9
    pnet = mtcnn_graph_def("pnet")
    placeholder = next(n for n in pnet.node if n.name == "pnet/input")
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [-1, -1, -1, 3]
    for size, cells in ((12, 1), (30, 10)):
        x = preprocess(resized(face_crops[:2], size))
        assert run_graph(pnet, x, "pnet/input", OUTPUTS["pnet"][0]).shape == (2, cells, cells, 2)
        assert run_graph(pnet, x, "pnet/input", OUTPUTS["pnet"][1]).shape == (2, cells, cells, 4)
    x = preprocess(resized(face_crops[:1], 12))
    assert run_graph(pnet, x, "pnet/input", "pnet/prob1")[0, 0, 0, 1] > 0.5  # a whole face in the 12x12 cell


def test_one_output_of_onet_exports_to_onnx_today(onet_pb, face_crops, tmp_path):
    """Multi-output export is not there yet; --output naming one output converts."""
    out = tmp_path / "onet_prob.onnx"
    result = CliRunner().invoke(main, ["to-onnx", str(onet_pb), "-o", str(out), "--output", "onet/prob1"])
    assert result.exit_code == 0, result.output
    from facecvt.validate.runners import load_runner

    x = preprocess(resized(face_crops, 48))
    with load_runner("onnxruntime", out) as runner:
        got = runner.embed(x)
    expected = run_graph(read_graph_def(onet_pb), x, "onet/input", "onet/prob1")
    assert np.abs(got - expected).max() < 1e-5


def test_sample_mtcnn_needs_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FACECVT_MTCNN", str(tmp_path / "nowhere"))
    out = tmp_path / "pnet.pb"
    result = CliRunner().invoke(main, ["sample", "mtcnn", "--net", "pnet", "-o", str(out)])
    assert result.exit_code == 2 and "det1.npy" in result.stderr and "FACECVT_MTCNN" in result.stderr
    assert not out.exists()
