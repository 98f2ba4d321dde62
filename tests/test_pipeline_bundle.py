"""Pipeline bundles (issue 15): `facecvt export MODEL --detector mtcnn=DIR` exports P/R/O-Net beside
the embedder and records the pipeline; `embed`/`serve BUNDLE --backend NAME` run detector and
embedder on that backend's artifacts and find what the TensorFlow pipeline finds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import boxes_on_crops, four_faces_canvas, shared_folder

from facecvt.cli import main
from facecvt.core.errors import FacecvtError


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A random-weight FaceNet exported to ONNX and TFLite with the MTCNN nets."""
    folder = tmp_path_factory.mktemp("pipeline_bundle")
    mtcnn = shared_folder("mtcnn")
    made = invoke("sample", "facenet", "--weights", "random", "-o", folder / "fn.pb")
    assert made.exit_code == 0, made.output
    result = invoke("export", folder / "fn.pb", "-o", folder / "b", "--targets", "onnx,tflite",
                    "--precision", "tflite=fp32,fp16", "--detector", f"mtcnn={mtcnn}")
    assert result.exit_code == 0, result.output
    return folder


def tensorflow_pipeline(folder):
    from facecvt.pipeline.face_pipeline import FacePipeline
    from facecvt.validate.runners import load_runner
    from facecvt.workflows.detector_graphs import tensorflow_detector_nets

    nets = tensorflow_detector_nets(shared_folder("mtcnn"))
    return FacePipeline(nets["pnet"], nets["rnet"], nets["onet"], load_runner("tensorflow", folder / "fn.pb"))


@pytest.mark.slow
def test_a_pipeline_bundle_runs_detector_and_embedder_on_each_backend(bundle, tmp_path):
    from PIL import Image

    from facecvt.pipeline.load import open_pipeline, spec_from_source

    folder = bundle / "b"
    manifest = json.loads((folder / "manifest.json").read_text())
    block = manifest["pipeline"]
    assert block["detector"]["min_face_size"] == 20 and block["detector"]["scale_factor"] == 0.709
    assert block["detector"]["thresholds"] == [0.6, 0.7, 0.7] and block["alignment"] == "similarity"
    assert block["embedder_preprocessing"]["mode"] == "fixed"
    entries = {(e["backend"], e["precision"]): e for e in block["artifacts"]}
    assert set(entries) == {("onnxruntime", "fp32"), ("litert", "fp32"), ("litert", "fp16")}
    for entry in entries.values():
        assert all((folder / entry[k]).is_file() for k in ("embedder", "pnet", "rnet", "onet"))
    assert manifest["pass"] and all(manifest["detector"][n]["pass"] for n in ("pnet", "rnet", "onet"))
    pnet_checks = manifest["detector"]["pnet"]
    assert pnet_checks["inputs"]["sizes"] == [[12, 12], [24, 24], [48, 64]]
    assert {o["original_name"] for a in manifest["detector"]["onet"]["artifacts"] for o in a["outputs"]} == \
        {"onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3"}

    canvas, crops = four_faces_canvas()
    reference = tensorflow_pipeline(bundle).faces(canvas)
    assert sorted(boxes_on_crops([f.box for f in reference], crops)) == sorted(crops)
    for backend in ("onnxruntime", "litert"):
        spec = spec_from_source(folder, backend=backend)
        assert spec.precision == "fp32" and spec.detector["pnet"].parent == folder
        pipeline = open_pipeline(spec)
        assert pipeline.detector_backend == backend
        assert {type(n.runner).__name__ for n in (pipeline.detector.pnet, pipeline.detector.onet)} != \
            {"TensorFlowRunner"}
        faces = pipeline.faces(canvas)
        assert len(faces) == len(reference) == 4
        for a, b in zip(faces, reference):
            assert np.allclose(a.box, b.box, atol=0.05) and np.allclose(a.landmarks, b.landmarks, atol=0.05)
            assert float(a.vector @ b.vector) / np.linalg.norm(a.vector) / np.linalg.norm(b.vector) > 0.9999

    # `serve BUNDLE --backend litert` serves this pipeline (the app in-process, as tests/test_serve_app.py)
    import io

    from fastapi.testclient import TestClient

    from facecvt.pipeline.index import FaceIndex
    from facecvt.workflows.serve import ServeOptions, create_app

    app = create_app(pipeline, FaceIndex(tmp_path / "index", 512), ServeOptions(), spec.to_dict())
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["backend"] == health["detector_backend"] == "litert"
        assert health["pipeline"]["detector_files"]["onet"].endswith("onet.tflite")
        served = client.post("/vectorize", files={"file": ("c.png", buffer.getvalue())}).json()
        assert sorted(boxes_on_crops([f["box"] for f in served], crops)) == sorted(crops)

    Image.fromarray(canvas).save(tmp_path / "canvas.png")
    result = invoke("embed", folder, tmp_path / "canvas.png", "--backend", "litert", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["backend"] == report["detector_backend"] == "litert"
    assert sorted(boxes_on_crops([f["box"] for f in report["images"][0]["faces"]], crops)) == sorted(crops)
    missing = invoke("embed", folder, tmp_path / "canvas.png", "--backend", "coreml")
    assert missing.exit_code == 2 and "no coreml pipeline" in missing.output


def test_detector_option_is_checked(tmp_path):
    from facecvt.workflows.pipeline_bundle import detector_spec, parse_detector
    from facecvt.workflows.bundle import BundleSpec

    with pytest.raises(FacecvtError, match="mtcnn=DIR"):
        parse_detector("retina=/x")
    with pytest.raises(FacecvtError, match="lacks det1.npy, det2.npy, det3.npy"):
        parse_detector(f"mtcnn={tmp_path}")
    assert parse_detector(f"mtcnn={shared_folder('mtcnn')}") == shared_folder("mtcnn")
    spec = detector_spec(BundleSpec(targets=("onnx", "tflite"), precisions={"onnx": ["int8"],
                                                                            "tflite": ["fp32", "fp16", "int8"]}))
    assert spec.precisions == {"onnx": ["fp32"], "tflite": ["fp32", "fp16"]}  # no int8 for the detector
    result = invoke("export", tmp_path / "none.pb", "-o", tmp_path / "b", "--detector", "mtcnn=/nowhere")
    assert result.exit_code == 2 and "lacks det1.npy" in result.output


def test_a_bundle_records_its_sources_as_absolute_paths(frozen, tmp_path, monkeypatch):
    """verify --pipeline reopens the source model and the MTCNN weights the manifest names: given as
    relative paths at export (`--detector mtcnn=../shared/mtcnn`), they are found from any folder."""
    import os
    from pathlib import Path

    from facecvt.workflows.pipeline_bundle import pipeline_block

    work = tmp_path / "work"
    work.mkdir()
    (work / "m.pb").write_bytes(frozen.graph_def.SerializeToString())
    monkeypatch.chdir(work)
    relative = Path(os.path.relpath(shared_folder("mtcnn"), work))
    weights = Path(pipeline_block({"artifacts": []}, {}, relative, "similarity", "fixed")["detector_source"]["weights"])
    assert weights.is_absolute() and weights.samefile(shared_folder("mtcnn"))
    result = invoke("export", "m.pb", "-o", "b", "--targets", "onnx")
    assert result.exit_code == 0, result.output
    source = Path(json.loads((work / "b" / "manifest.json").read_text())["source"]["path"])
    assert source.is_absolute() and source.samefile(work / "m.pb")


@pytest.mark.slow
def test_verify_pipeline_compares_every_backend_with_tensorflow(bundle, tmp_path, monkeypatch):
    """`verify --pipeline`: every backend and precision of the bundle finds the TensorFlow pipeline's
    faces (fp32: IoU >= 0.95, landmarks <= 1 px, cosine >= 0.9999); out of limits exits 1."""
    import shutil

    from PIL import Image

    from facecvt.workflows import verify_pipeline

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(four_faces_canvas()[0]).save(images / "canvas.png")
    shutil.copy(shared_folder("faces") / "img5.png", images)
    result = invoke("verify", "--pipeline", bundle / "b", "--images", images, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["reference_faces"] == 5 and report["pass"]
    rows = {(r["backend"], r["precision"]): r for r in report["backends"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("litert", "fp32"), ("litert", "fp16")}
    for (backend, precision), row in rows.items():
        assert row["matched"] == 5 and row["missed"] == row["added"] == 0
        if precision == "fp32":
            assert row["min_iou"] > 0.999 and row["max_landmark_px"] < 0.01 and row["min_cosine"] > 0.99999
    (tmp_path / "pairs.csv").write_text("left,right,same\nimg5.png,img5.png,1\nimg5.png,canvas.png,0\n")
    with_pairs = invoke("verify", "--pipeline", bundle / "b", "--images", images, "--pairs", tmp_path / "pairs.csv",
                        "--json", tmp_path / "p.json")
    assert with_pairs.exit_code == 0, with_pairs.output
    for row in json.loads((tmp_path / "p.json").read_text())["backends"]:
        assert row["pairs"]["pairs"] == 2 and row["pairs"]["agreement"] == 1.0
    monkeypatch.setitem(verify_pipeline.LIMITS, "fp32", {**verify_pipeline.LIMITS["fp32"], "min_cosine": 1.5})
    strict = invoke("verify", "--pipeline", bundle / "b", "--images", images)
    assert strict.exit_code == 1 and "onnxruntime fp32 (cosine)" in strict.output
    assert invoke("verify", "--pipeline", bundle / "b").exit_code == 2  # --images is needed


def test_pipeline_faces_are_matched_by_iou():
    from facecvt.pipeline.face_pipeline import Face
    from facecvt.workflows.verify_pipeline import match

    def face(x):
        return Face(np.array([x, 0, x + 10, 10], np.float32), 1.0, None, np.ones(2))

    pairs, lost, extra = match([face(0), face(100), face(200)], [face(101), face(1), face(50)])
    assert [(i, j) for i, j, _ in sorted(pairs)] == [(0, 1), (1, 0)] and lost == [2] and extra == [2]
    assert invoke("verify").exit_code == 2 and "REFERENCE" in invoke("verify").output
