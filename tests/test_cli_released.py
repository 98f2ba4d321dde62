"""The CLI end to end on the released-weights sample: sample, inspect, freeze, export, verify, bench."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main

pytestmark = pytest.mark.slow


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_sample_checkpoint_with_random_weights_freezes_to_128d(tmp_path):
    folder = tmp_path / "ckpt"
    result = invoke("sample", "facenet", "--weights", "random", "--embedding-size", "128", "--format", "checkpoint",
                    "--seed", "7", "-o", folder)
    assert result.exit_code == 0, result.output
    assert {p.suffix for p in folder.iterdir()} >= {".meta", ".index"}
    out = tmp_path / "clean.pb"
    result = invoke("freeze", folder, "-o", out)
    assert result.exit_code == 0, result.output
    assert "(128-D)" in result.stdout and "prune_dead_branches" in result.stderr


def test_inspect_json_reports_the_training_structure(released_raw_pb):
    result = invoke("inspect", released_raw_pb, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["inputs"][0] == {"name": "input", "op": "Identity", "shape": [None, 160, 160, 3], "dtype": "float32"}
    assert report["outputs"][0]["name"] == "embeddings"
    assert report["training_flags"][0]["name"] == "phase_train"
    structure = report["training_structure"]
    assert structure["switch"] > 1000 and structure["merge"] > 400 and structure["queues"] == 1
    assert structure["moving_average_updates"] == 224 and structure["dropout"] == 1
    assert report["extra_outputs"] == ["label_batch"]
    assert any("prune the dead branch" in line for line in report["freeze_plan"])


@pytest.fixture(scope="session")
def bundle(released_raw_pb, faces_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "facenet"
    result = invoke("export", released_raw_pb, "-o", out, "--images", faces_dir, "--pairs", faces_dir / "pairs.csv")
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_all_four_targets_with_a_manifest_that_matches(bundle, released_raw_pb):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["pass"] is True
    assert {a["target"] for a in manifest["artifacts"]} == {"opencv", "onnx", "tflite", "coreml"}
    for artifact in manifest["artifacts"]:
        assert artifact["verify"]["pass"] is True
        for entry in artifact["files"]:
            path = bundle / entry["file"]
            if path.is_file():
                assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
                assert path.stat().st_size == entry["size_bytes"]
            else:
                assert path.is_dir() and path.suffix == ".mlpackage"
        assert artifact["output"] == {"name": "embeddings", "embedding_size": 512, "l2_normalized": True}
        assert artifact["input"]["name"] == "input" and artifact["preprocessing"]["mode"] == "fixed"
    assert manifest["source"]["sha256"] == hashlib.sha256(released_raw_pb.read_bytes()).hexdigest()
    assert 0.5 < manifest["distance_threshold"] < 2.0
    assert all(manifest["versions"][k] for k in ("tensorflow", "tf2onnx", "onnxruntime", "coremltools"))
    readme = (bundle / "README.md").read_text()
    assert "cv2.dnn.readNetFromTensorflow" in readme and "import CoreML" in readme


def test_export_bundle_holds_an_html_report_with_plots_and_the_model_card(bundle):
    text = (bundle / "report.html").read_text()
    assert text.count('<img class="distribution"') == 4 and text.count('<img class="roc"') == 1
    assert '<table class="model-card">' in text and '<table class="candidates">' in text
    assert str(bundle / "facenet_released_raw.onnx") in text  # the bundle's paths, not the temporary folder's


def test_verify_passes_all_four_backends_with_pair_accuracy_one(bundle, released_raw_pb, faces_dir, tmp_path):
    report_path = tmp_path / "report.json"
    candidates = [bundle / "facenet_released_raw.pb", bundle / "facenet_released_raw.onnx",
                  bundle / "facenet_released_raw.tflite", bundle / "facenet_released_raw.mlpackage"]
    result = invoke("verify", released_raw_pb, *candidates, "--images", faces_dir, "--pairs",
                    faces_dir / "pairs.csv", "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["pass"] and report["inputs"]["count"] == 61 and report["inputs"]["preprocess"] == "fixed"
    assert [c["backend"] for c in report["candidates"]] == ["opencv", "onnxruntime", "litert", "coreml"]
    for row in report["pairs"]["results"]:
        assert row["accuracy"] == 1.0 and row["decision_agreement"] == 1.0


def broken_export(frozen, out, how: str):
    """An ONNX export of a subtly wrong graph: one mid-network conv scaled by 3 %, or RGB read as BGR."""
    from facecvt.workflows.export_artifact import export
    from facecvt.core.frozen import FrozenGraph
    from facecvt.graph_ops.graph import const_value, make_const, node_map

    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    nodes = node_map(graph_def)
    convs = [n for n in graph_def.node if n.op == "Conv2D"]
    conv = convs[len(convs) // 2] if how == "scaled" else convs[0]
    weights = nodes[conv.input[1]]
    value = const_value(weights)
    value = value * 1.03 if how == "scaled" else value[:, :, ::-1, :]
    weights.CopyFrom(make_const(None, weights.name, np.ascontiguousarray(value, dtype=np.float32)))
    broken = FrozenGraph(graph_def, frozen.input_name, frozen.output_name, frozen.input_shape, frozen.embedding_size)
    return export("onnx", broken, out).path


@pytest.mark.parametrize("how", ["scaled", "bgr"])
def test_verify_fails_a_subtly_broken_export(how, released_frozen, released_raw_pb, bundle, faces_dir, tmp_path):
    bad = broken_export(released_frozen.frozen, tmp_path / f"broken_{how}.onnx", how)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["verify", str(released_raw_pb), str(bundle / "facenet_released_raw.onnx"),
                                       str(bad), "--images", str(faces_dir), "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    assert str(bad) in result.stderr and "max_abs" in result.stderr
    report = json.loads(report_path.read_text())
    good, broken = report["candidates"]
    assert good["pass"] and not broken["pass"] and "max_abs" in broken["failed"]


def test_bench_reports_every_backend_at_batch_1_and_8(bundle, released_raw_pb, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", f"tensorflow={released_raw_pb}", bundle / "facenet_released_raw.onnx",
                    bundle / "facenet_released_raw.tflite", bundle / "facenet_released_raw.pb", "--batch", "1",
                    "--batch", "8", "--repeats", "3", "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert {(r["backend"], r["batch"]) for r in rows} == {(b, n) for b in ("tensorflow", "onnxruntime", "litert",
                                                                           "opencv") for n in (1, 8)}
    assert all(r["median_ms"] > 0 and r["speed_vs_tensorflow"] > 0 for r in rows)


def test_readme_opencv_snippet_reproduces_fixed_preprocessing(bundle, face_paths, faces):
    """The README's cv2.dnn.blobFromImages arguments give the same embeddings as (x - 127.5) / 128 in RGB."""
    import cv2

    from facecvt.validate.runners import load_runner

    net = cv2.dnn.readNetFromTensorflow(str(bundle / "facenet_released_raw.pb"),
                                        str(bundle / "facenet_released_raw.pbtxt"))
    images = [cv2.imread(str(p)) for p in face_paths[:8]]  # BGR, as OpenCV reads them
    blob = cv2.dnn.blobFromImages(images, scalefactor=1 / 128, size=(160, 160), mean=(127.5, 127.5, 127.5),
                                  swapRB=True)
    net.setInput(blob)
    embeddings = net.forward()
    with load_runner("onnxruntime", bundle / "facenet_released_raw.onnx") as runner:
        expected = runner.embed(faces[:8])
    assert embeddings.shape == (8, 512)
    assert np.abs(embeddings - expected).max() <= 1e-5


def test_verify_reads_fp16_from_the_artifacts_and_passes_them(released_raw_pb, released_export, faces_dir, tmp_path):
    """`verify RAW.pb m_fp16.mlpackage m_fp16.tflite`: each judged by fp16 tolerances read from the file (exit 0)."""
    coreml, tflite = released_export("coreml", "fp16").path, released_export("tflite", "fp16").path
    report_path = tmp_path / "fp16.json"
    result = invoke("verify", released_raw_pb, coreml, tflite, "--images", faces_dir, "--json", report_path)
    assert result.exit_code == 0, result.output
    candidates = json.loads(report_path.read_text())["candidates"]
    assert [c["precision"] for c in candidates] == ["fp16", "fp16"]
    assert all(c["tolerances"]["min_cosine"] == 0.9995 and c["tolerances"]["atol"] is None for c in candidates)
    assert candidates[0]["executed_by"] == "facecvt MIL executor, not Core ML"
