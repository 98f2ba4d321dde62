"""ONNX int8 (static QDQ) on the tiny graph: calibrated on half the shared faces, scored on the other half.

Also the per-layer error account (a planted bad scale is ranked first), --keep-float,
--auto-keep-float, the --cpu profiles, and verify's warning when calibration and scoring overlap.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from _tiny_graph import IMAGE_SIZE
from conftest import faces_folder
from facecvt.convert import onnx_int8
from facecvt.convert.calibration import CalibrationImages
from facecvt.core.digests import image_set_digest
from facecvt.core.errors import FacecvtError
from facecvt.core.images import iter_image_batches
from facecvt.validate import quant_report
from facecvt.validate.artifacts import artifact_precision, quantization_record
from facecvt.validate.verify import InputSpec, verify
from facecvt.workflows.export_artifact import export

SIZE = (IMAGE_SIZE, IMAGE_SIZE)


@pytest.fixture(scope="module")
def halves():
    """(calibration paths, held-out paths): even and odd shared faces. Missing faces fail, not skip."""
    folder = faces_folder()
    paths = sorted(folder.glob("*.png"))
    assert len(paths) >= 16, f"the shared faces are missing from {folder}"
    return paths[0::2], paths[1::2]


@pytest.fixture(scope="module")
def calibration(halves):
    return CalibrationImages(faces_folder(), files=tuple(halves[0])).at_size(SIZE)


def batches(paths, size=SIZE):
    return [b for _, b in iter_image_batches(paths, size, "fixed", 8)]


@pytest.fixture(scope="module")
def fp32(frozen, tmp_path_factory):
    return export("onnx", frozen, tmp_path_factory.mktemp("fp32") / "tiny.onnx").path


@pytest.fixture(scope="module")
def int8(frozen, calibration, tmp_path_factory):
    return export("onnx", frozen, tmp_path_factory.mktemp("int8") / "tiny_int8.onnx", precision="int8",
                  calibration=calibration, progress=None)


@pytest.fixture(scope="module")
def quantised(fp32, calibration, tmp_path_factory):
    """(float model quantised, int8 model) from onnx_int8.quantize, the work folder kept."""
    work = tmp_path_factory.mktemp("work")
    out = work / "int8.onnx"
    onnx_int8.quantize(fp32, out, calibration, input_name="input", cpu="vnni", cache_dir=work)
    return work / "prepared.onnx", out


def min_cosine(a, b):
    return float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_int8_is_close_to_fp32_on_faces_it_was_not_calibrated_on(fp32, int8, halves):
    import onnxruntime

    held = np.concatenate(batches(halves[1]))
    a, b = (onnxruntime.InferenceSession(str(p)).run(None, {"input": held})[0] for p in (fp32, int8.path))
    assert min_cosine(a, b) >= 0.99


def test_artifact_is_int8_and_records_cpu_and_calibration_digest(int8, halves):
    assert artifact_precision("onnxruntime", int8.path) == "int8"
    record = quantization_record("onnxruntime", int8.path)
    digest = image_set_digest(halves[0])
    assert record["cpu"] == onnx_int8.detect_cpu()
    assert (record["calibration_images"], record["calibration_sha256"]) == (digest["count"], digest["sha256"])
    assert record["per_channel"] and record["calibration_method"] == "minmax"
    details = int8.details["quantization"]
    assert {k: details[k] for k in record} == record  # the manifest gets what the model records
    assert details["worst_layers"] and details["worst_layers"][0]["sqnr_db"] <= details["worst_layers"][-1]["sqnr_db"]


def test_the_head_stays_float_by_default(int8):
    """The embedding's FC layer and L2 normalisation: little work, much of the error."""
    model = onnx.load(str(int8.path))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    head = [n for n in model.graph.node if n.name in onnx_int8.head_nodes(model)]
    assert {n.op_type for n in head} >= {"Gemm", "ReduceSum", "Mul"}
    assert all(producers.get(i) != "DequantizeLinear" for n in head for i in n.input[1:])  # float weights
    assert set(onnx_int8.head_nodes(model)) <= set(quantization_record("onnxruntime", int8.path)["keep_float"])


@pytest.mark.parametrize("cpuinfo, machine, expected", [
    ("flags\t: fpu avx2 fma avx512f avx512_vnni\n", "x86_64", "vnni"),
    ("flags\t: fpu avx2 fma avx_vnni\n", "x86_64", "vnni"),
    ("flags\t: fpu avx2 fma avx512f\n", "x86_64", "avx2"),
    ("Features\t: fp asimd asimddp\n", "aarch64", "arm"),
])
def test_cpu_is_detected_from_cpuinfo_flags(cpuinfo, machine, expected):
    assert onnx_int8.detect_cpu(cpuinfo, machine) == expected


def test_avx2_profile_quantises_weights_to_7_bits(fp32, calibration, tmp_path):
    """x86 without VNNI: reduce_range keeps |w| <= 64 so u8 x s8 pair sums cannot saturate int16."""
    out = tmp_path / "avx2.onnx"
    record = onnx_int8.quantize(fp32, out, calibration, input_name="input", cpu="avx2")
    assert record["reduce_range"] and record["activation_type"] == "uint8"
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 64


def _scale_of(model, tensor):
    """The scale initializer of the QuantizeLinear of activation `tensor`."""
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return next(i for i in model.graph.initializer if i.name == quantize.input[1])


def _weight_scale_of(model, layer):
    """The scale initializer of the dequantised weight of node `layer`."""
    node = next(n for n in model.graph.node if n.name == layer)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    dq = next(producers[i] for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"
              and producers[i].input[0] in inits)
    return inits[dq.input[1]]


@pytest.mark.parametrize("kind", ["activation", "weight"])
def test_a_planted_bad_scale_is_ranked_first(quantised, calibration, tmp_path, kind):
    prepared, int8_path = quantised
    images = list(calibration)
    before = quant_report.layer_report(prepared, int8_path, images)
    model = onnx.load(str(int8_path))
    victim = next(layer for layer in reversed(before["layers"]) if layer["op"] == "Conv")["layer"]
    assert before["layers"][0]["layer"] != victim
    if kind == "activation":  # the best-ranked conv's output gets a 50x too small scale: it saturates
        output = next(n for n in model.graph.node if n.name == victim).output[0]
        scale, factor = _scale_of(model, output), 0.02
    else:  # its weights get scales 30 % off
        scale, factor = _weight_scale_of(model, victim), 1.3
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    planted = tmp_path / "planted.onnx"
    onnx.save_model(model, str(planted))
    worst = quant_report.layer_report(prepared, planted, images)["layers"][0]
    assert (worst["layer"], worst["worst_tensor_kind"]) == (victim, kind)
    assert worst["sqnr_db"] < before["layers"][0]["sqnr_db"] - 6


def test_keep_float_leaves_the_named_layer_unquantised(fp32, calibration, tmp_path):
    out = tmp_path / "kept.onnx"
    onnx_int8.quantize(fp32, out, calibration, input_name="input", keep_float=["depthwise"])
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    kept = next(n for n in model.graph.node if n.name == "depthwise")
    assert kept.input[1] in floats  # its weights stay float: onnxruntime runs it as a float Conv
    quantised_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name != "depthwise"]
    assert quantised_convs and all(producers.get(n.input[1]) == "DequantizeLinear" for n in quantised_convs)


def test_auto_keep_float_scores_on_images_it_did_not_calibrate_on(frozen, calibration, tmp_path):
    result = export("onnx", frozen, tmp_path / "auto.onnx", precision="int8", calibration=calibration,
                    auto_keep_float=True, target_cosine=0.99, progress=None)
    auto = result.details["quantization"]["auto_keep_float"]
    assert auto["steps"][-1]["min_cosine"] >= 0.99 and auto["keep_float"] == auto["steps"][-1]["keep_float"]
    assert all(s["batch1_ms"] > 0 for s in auto["steps"])
    calibrated = {p.name for p in calibration.split(onnx_int8.HELD_OUT_EVERY)[0].paths()}
    assert auto["held_out_images"] and not calibrated & set(auto["held_out_images"])
    record = quantization_record("onnxruntime", result.path)
    assert record["calibration_images"] == len(calibrated)


def test_auto_keep_float_refuses_an_unreachable_target(frozen, calibration, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_int8, "MAX_KEEP_FLOAT", 1)
    with pytest.raises(FacecvtError, match="with 1 more layers kept in float, below --target-cosine"):
        export("onnx", frozen, tmp_path / "never.onnx", precision="int8", calibration=calibration,
               auto_keep_float=True, target_cosine=0.9999999, progress=None)
    assert not (tmp_path / "never.onnx").exists()


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods_quantise_and_are_recorded(fp32, calibration, halves, tmp_path, method):
    import onnxruntime

    out = tmp_path / f"{method}.onnx"
    assert onnx_int8.quantize(fp32, out, calibration, input_name="input", method=method)["calibration_method"] == method
    held = np.concatenate(batches(halves[1]))
    a, b = (onnxruntime.InferenceSession(str(p)).run(None, {"input": held})[0] for p in (fp32, out))
    assert min_cosine(a, b) >= 0.98


@pytest.mark.parametrize("options, message", [
    ({}, "needs calibration images"),
    ({"calibration": []}, "the calibration set is empty"),
    ({"calibration": "CAL", "cpu": "sparc"}, "--cpu 'sparc' is unknown"),
    ({"calibration": "CAL", "calibration_method": "guess"}, "--calibration-method 'guess' is unknown"),
])
def test_bad_int8_options_are_user_errors_before_conversion(frozen, calibration, tmp_path, options, message):
    options = {k: calibration if v == "CAL" else v for k, v in options.items()}
    with pytest.raises(FacecvtError, match=message):
        export("onnx", frozen, tmp_path / "bad.onnx", precision="int8", **options)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.fixture(scope="module")
def tflite_int8(frozen, calibration, tmp_path_factory):
    return export("tflite", frozen, tmp_path_factory.mktemp("tflite") / "tiny_int8.tflite", precision="int8",
                  calibration=calibration)


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_verify_warns_when_scored_on_calibration_images(fp32, int8, tflite_int8, halves, tmp_path, backend):
    candidate = (backend, int8.path if backend == "onnxruntime" else tflite_int8.path)
    mixed, clean = tmp_path / "mixed", tmp_path / "clean"
    mixed.mkdir(), clean.mkdir()
    for path in halves[1][:4]:
        shutil.copy(path, clean / path.name)
        shutil.copy(path, mixed / path.name)
    shutil.copy(halves[0][0], mixed / "renamed_copy.png")  # same content, other name: still an overlap
    report = verify(("onnxruntime", fp32), [candidate], InputSpec(images=mixed))
    (warning,) = report["warnings"]
    assert "1 of the 5 images" in warning and "renamed_copy.png" in warning
    assert "warnings" not in verify(("onnxruntime", fp32), [candidate], InputSpec(images=clean))



def invoke(*args):
    from click.testing import CliRunner

    from facecvt.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def test_cli_int8_without_calibration_is_one_line_exit_2(tiny_pb, tmp_path):
    result = invoke("to-onnx", tiny_pb, "-o", tmp_path / "m.onnx", "--precision", "int8")
    assert result.exit_code == 2, result.output
    assert "needs calibration images" in result.output and not (tmp_path / "m.onnx").exists()


def test_export_bundle_with_onnx_int8_records_the_quantisation(tiny_pb, halves, tmp_path):
    import json

    faces = tmp_path / "faces"
    faces.mkdir()
    for path in halves[1][:12]:
        shutil.copy(path, faces / path.name)
    result = invoke("export", tiny_pb, "-o", tmp_path / "bundle", "--targets", "onnx",
                    "--precision", "onnx=fp32,int8", "--images", faces)
    assert result.exit_code == 0, result.output
    assert "was calibrated on 12 of the 12 images it is scored on" in result.output  # the bundle's own warning
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    (int8,) = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert int8["details"]["quantization"]["calibration_images"] == 12
    assert int8["details"]["quantization"]["worst_layers"] and int8["verify"]["pass"]
