"""TFLite export (fp32, fp16, int8) and the LiteRT runner against TensorFlow on a tiny embedding graph."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from _tiny_graph import EMBEDDING_SIZE, IMAGE_SIZE, min_cosine, smooth_images, unconvertible_frozen_graph
from facecvt.convert import tflite as tflite_target
from facecvt.workflows.export_artifact import export
from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import concrete_function
from facecvt.core.targets import TARGETS
from facecvt.core.tf_env import import_tf
from facecvt.validate.runners import load_runner


@pytest.fixture(scope="module")
def calibration():
    """32 image-like inputs in 4 batches of 8 (a different seed from the evaluated images)."""
    return list(smooth_images(32, seed=7).reshape(4, 8, IMAGE_SIZE, IMAGE_SIZE, 3))


@pytest.fixture(scope="module")
def exported(frozen, calibration, tmp_path_factory):
    """One export per precision, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("tflite")
    return {precision: export("tflite", frozen, folder / f"tiny_{precision}.tflite", precision=precision,
                              calibration=calibration if precision == "int8" else None)
            for precision in TARGETS["tflite"].precisions}


def embed_batches(path, images):
    """Embeddings at batch 1, 5, then 1 again (the runner resizes its input both ways)."""
    with load_runner("litert", path, threads=1) as runner:
        assert runner.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
        first, batch, last = runner.embed(images[:1]), runner.embed(images), runner.embed(images[4:])
    assert first.shape == last.shape == (1, EMBEDDING_SIZE) and batch.shape == (5, EMBEDDING_SIZE)
    assert batch.dtype == np.float32
    return first, batch, last


def test_fp32_matches_tensorflow(exported, images, expected):
    first, batch, last = embed_batches(exported["fp32"].path, images)
    assert np.max(np.abs(first - expected[:1])) <= 1e-5
    assert np.max(np.abs(batch - expected)) <= 1e-5
    assert np.max(np.abs(last - expected[4:])) <= 1e-5


def test_fp16_is_close_and_smaller(exported, images, expected):
    first, batch, _ = embed_batches(exported["fp16"].path, images)
    assert min_cosine(first, expected[:1]) >= 0.9995
    assert min_cosine(batch, expected) >= 0.9995
    assert exported["fp16"].details["size_bytes"] < exported["fp32"].details["size_bytes"]
    assert exported["fp16"].details["ops"].get("DEQUANTIZE", 0) > 0  # float16 weights, dequantised at load


def test_int8_is_close(exported, images, expected):
    first, batch, _ = embed_batches(exported["int8"].path, images)
    assert min_cosine(first, expected[:1]) >= 0.99
    assert min_cosine(batch, expected) >= 0.99


def test_int8_is_full_integer_with_float_io(exported):
    interpreter = Interpreter(model_path=str(exported["int8"].path))
    tensors = interpreter.get_tensor_details()
    float_tensors = {t["name"] for t in tensors if t["dtype"] == np.float32}
    assert float_tensors == {"input", "embeddings"}  # only the float I/O around QUANTIZE/DEQUANTIZE
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert any(t["dtype"] == np.int8 for t in tensors)
    ops = exported["int8"].details["ops"]
    assert ops["QUANTIZE"] == ops["DEQUANTIZE"] == 1


def test_details_report_precision_ops_and_size(exported):
    for precision, result in exported.items():
        details = result.details
        assert details["precision"] == result.precision == precision
        assert details["size_bytes"] == result.path.stat().st_size
        assert details["ops"]["CONV_2D"] == 2 and details["ops"]["DEPTHWISE_CONV_2D"] == 1
        assert details["ops"]["FULLY_CONNECTED"] == 1


def test_model_summary_flags_float_compute_ops(exported):
    assert tflite_target.model_summary(exported["int8"].path.read_bytes())["float_compute_ops"] == []
    fp32_summary = tflite_target.model_summary(exported["fp32"].path.read_bytes())
    assert sorted(fp32_summary["float_compute_ops"]) == ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D",
                                                         "FULLY_CONNECTED"]


def test_int8_without_calibration_asks_for_it(frozen, tmp_path):
    with pytest.raises(FacecvtError, match="--calibration DIR"):
        export("tflite", frozen, tmp_path / "int8.tflite", precision="int8")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("calibration, message", [
    ([np.zeros((2, 32, 32, 3), np.float32)], r"calibration data has shape \(2, 32, 32, 3\)"),
    ([], "calibration set is empty"),
])
def test_bad_calibration_is_a_user_error(frozen, tmp_path, calibration, message):
    with pytest.raises(FacecvtError, match=message):
        export("tflite", frozen, tmp_path / "int8.tflite", precision="int8", calibration=calibration)
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_is_a_user_error(frozen, tmp_path):
    with pytest.raises(FacecvtError, match=r"tflite export takes --precision fp32\|fp16\|int8"):
        export("tflite", frozen, tmp_path / "bf16.tflite", precision="bf16")


def test_failed_conversion_names_the_op_and_leaves_no_file(tmp_path):
    with pytest.raises(FacecvtError, match=r"tf\.Erfinv.*node erfinv/Erfinv"):
        export("tflite", unconvertible_frozen_graph(), tmp_path / "erfinv.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_runner_quantises_integer_inputs_and_outputs(frozen, calibration, images, expected, tmp_path):
    """A model with int8 input and output tensors (not what facecvt writes, but what others ship)."""
    tf = import_tf()
    function, wrapped = concrete_function(frozen)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], wrapped)
    tflite_target.configure(converter, "int8", calibration, frozen)
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8_io.tflite"
    path.write_bytes(converter.convert())
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    with load_runner("litert", path) as runner:
        batch = runner.embed(images)
    assert batch.dtype == np.float32
    assert min_cosine(batch, expected) >= 0.99


def test_delegation_account_names_the_ops_xnnpack_leaves_to_builtin_kernels(exported):
    from facecvt.validate.litert_ops import delegation, latency_ms

    fp32, int8 = delegation(exported["fp32"].path), delegation(exported["int8"].path)
    assert fp32["op_types"]["CONV_2D"] == 2 and all(r["delegated"] for r in fp32["ops"] if r["op"] == "CONV_2D")
    assert fp32["not_delegated"] == {"L2_NORMALIZATION": 1}  # XNNPACK has no L2 normalisation
    assert int8["op_types"]["QUANTIZE"] >= 1 and all(r["input_type"] == "int8" for r in int8["ops"]
                                                    if r["op"] == "CONV_2D")
    delegated = [r["delegated"] for r in int8["ops"]]  # the tiny graph is a chain, in execution order
    runs = sum(1 for i, d in enumerate(delegated) if d and (i == 0 or not delegated[i - 1]))
    assert int8["partitions"] == runs  # every builtin op inside the chain splits XNNPACK's partition
    assert latency_ms(exported["int8"].path, repeats=2, delegates=False) > 0


def test_int8_records_its_quantisation_and_ranks_its_layers_by_sqnr(exported):
    from facecvt.validate.artifacts import quantization_record

    details = exported["int8"].details["quantization"]
    assert quantization_record("litert", exported["int8"].path) == {
        k: v for k, v in details.items() if k != "worst_layers"}
    assert quantization_record("litert", exported["fp32"].path) is None
    sqnr = [layer["sqnr_db"] for layer in details["worst_layers"]]
    assert sqnr == sorted(sqnr) and 0 < sqnr[0] < 60
    assert {layer["op"] for layer in details["worst_layers"]} >= {"CONV_2D", "FULLY_CONNECTED"}


def test_keep_float_leaves_the_named_op_in_float(frozen, calibration, exported, tmp_path):
    worst = exported["int8"].details["quantization"]["worst_layers"]
    kept = next(layer for layer in worst if layer["op"] == "CONV_2D")["layer"]
    result = export("tflite", frozen, tmp_path / "kept.tflite", precision="int8", calibration=calibration,
                    keep_float=[kept])
    summary = tflite_target.model_summary(result.path.read_bytes())
    assert summary["float_compute_ops"] == ["CONV_2D"] and result.details["quantization"]["keep_float"] == [kept]
    from facecvt.validate.litert_ops import delegation

    (l2,) = [r["output"] for r in delegation(exported["int8"].path)["ops"] if r["op"] == "L2_NORMALIZATION"]
    head = export("tflite", frozen, tmp_path / "head.tflite", precision="int8", calibration=calibration,
                  keep_float=[l2])  # the output op: named NAME1 in the int8 model, NAME before quantisation
    ops = [(r["op"], r["input_type"]) for r in delegation(head.path)["ops"]]
    assert ("L2_NORMALIZATION", "float32") in ops
    with pytest.raises(FacecvtError, match="--keep-float names no op output"):
        export("tflite", frozen, tmp_path / "bad.tflite", precision="int8", calibration=calibration,
               keep_float=["no_such_tensor"])
