"""Keras models (seed 004's MobileFaceNet and ResNet50V2 with the insightface embedding head, and an
O-Net-like detector with three outputs) in every file format load, freeze and export to every target
and precision, and `verify` passes each export, output by output, against Keras itself run with
training=False (tests/_keras_reference.py). int8 is calibrated on half the shared faces and verified on
the other half. Each model is built and saved once per session, each artifact exported once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze
from facecvt.workflows.export_artifact import export

from _keras_reference import KerasRunner
from conftest import faces_folder, run_graph

SMALL = {"width": 0.25, "repeats": (2, 1, 1, 1, 1), "embedding_size": 64}
# what `--custom-objects` gets: the function a .keras file names but does not hold
CUSTOM_OBJECTS = "def scale_residual(x, scale):\n    return x * scale\n"


def relative_error(got, expected) -> float:
    """max |got - expected| relative to the output's largest magnitude (these heads are not L2-normalised)."""
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


def face_like(n: int, seed: int = 3, size: int = 112) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, size // 8, size // 8, 3))
    x = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + rng.normal(0, 0.05, (n, size, size, 3))
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def mobile_files(tmp_path_factory):
    """The small MobileFaceNet as .keras (Lambda by name), Keras-2 .h5 (Lambda code stored, written by
    tf_keras as tf.keras did), and Keras 3 SavedModel; with the Keras model's own outputs."""
    import keras
    import tf_keras

    from facecvt.samples import keras_faces

    folder = tmp_path_factory.mktemp("keras_mobile")
    model = keras_faces.mobile_facenet(keras, lambda_layer="function", seed=0, **SMALL)
    assert keras_faces.randomize_batch_norms(model, seed=1) > 20
    keras2 = keras_faces.mobile_facenet(tf_keras, lambda_layer="lambda", **SMALL)
    keras_faces.copy_weights(model, keras2)
    paths = keras_faces.save_all_formats(model, folder, "mobilefacenet", keras2_model=keras2)
    (folder / "custom_faces.py").write_text(CUSTOM_OBJECTS)
    paths["custom_objects"] = folder / "custom_faces.py"
    x = face_like(5)
    expected = keras_faces.reference_outputs(model, x)
    assert relative_error(keras_faces.reference_outputs(keras2, x), expected) < 1e-5
    assert np.abs(expected).max() > 1.0  # not normalised: the tolerance must be relative
    return paths, x, expected, model


@pytest.fixture(scope="session")
def frozen_by_format(mobile_files):
    paths = mobile_files[0]
    frozen = {}
    for fmt in ("keras", "h5", "h5_keras3", "saved_model"):
        needs_custom = fmt in ("keras", "h5_keras3")  # Keras 3 stores the Lambda's function by name
        model = load_model(paths[fmt], custom_objects=paths["custom_objects"] if needs_custom else None)
        frozen[fmt] = (model, freeze(model).frozen)
    return frozen


@pytest.mark.parametrize("fmt", ["keras", "h5", "h5_keras3", "saved_model"])
def test_each_format_freezes_to_the_keras_inference_outputs(frozen_by_format, mobile_files, fmt):
    _, x, expected, _ = mobile_files
    model, frozen = frozen_by_format[fmt]
    assert model.kind == fmt.replace("_keras3", "") and model.input_name == "input"
    assert model.output_name == ("output_0" if fmt == "saved_model" else "embedding")
    assert not model.training_flags
    ops = {n.op for n in frozen.graph_def.node}
    assert not ops & (TRAINING_OPS | {"Rsqrt", "FusedBatchNormV3"}), ops  # batch norms folded, no dropout
    assert frozen.input_shape == (None, 112, 112, 3) and frozen.embedding_size == 64
    got = run_graph(frozen.graph_def, x, frozen.input_name, frozen.output_name)
    assert relative_error(got, expected) <= 1e-5


def test_keras2_h5_lambda_code_loads_and_the_loader_says_who_read_it(frozen_by_format):
    model, _ = frozen_by_format["h5"]
    assert model.found["layer_kinds"]["Lambda"] == 1 and model.found["layer_kinds"]["BatchNormalization"] > 20
    # Keras 3 refuses this Keras-2 SeparableConv2D config, so Keras 2 read it, and says so
    assert model.loader.startswith("tf_keras") and "SeparableConv2D" in model.loader
    assert model.found["outputs"] == {"embedding": "embedding"}
    assert "legacy HDF5 loader" in frozen_by_format["h5_keras3"][0].loader
    assert model.found["lambda_code"].startswith("1 Lambda layers rebuilt from the Python code the file stores "
                                                 "(safe mode off")


FORMS = ("keras", "h5", "saved_model")  # .keras, Keras-2 .h5 (tf_keras), SavedModel (Keras 3 model.export)
TARGETS = (("opencv", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"),
           ("tflite", "int8"), ("coreml", "fp32"), ("coreml", "fp16"))
SUFFIX = {"opencv": ".pb", "onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}
BACKEND = {"opencv": "opencv", "onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}


def _slow_unless(target, precision):
    """A conversion that takes seconds (Core ML: 4-7 s, int8 with its calibration: 2-6 s) runs as slow."""
    return (pytest.mark.slow,) if target == "coreml" or precision == "int8" else ()


MATRIX = [pytest.param(fmt, target, precision, marks=_slow_unless(target, precision), id=f"{fmt}-{target}-{precision}")
          for fmt in FORMS for target, precision in TARGETS]


def exports_of(frozen_of, halves, folder):
    """(stem, form, target, precision) -> the ExportResult, each made once."""
    from facecvt.convert.calibration import CalibrationImages

    made = {}

    def get(stem, fmt, target, precision):
        key = (stem, fmt, target, precision)
        if key not in made:
            frozen = frozen_of(fmt)
            options = {"precision": precision}
            if precision == "int8":
                options["calibration"] = CalibrationImages(faces_folder(), files=halves[0]).for_model(frozen)
                if target == "onnx":
                    options["progress"] = None
            out = folder / f"{stem}_{fmt}_{precision}{SUFFIX[target]}"
            made[key] = export(target, frozen, out, **options)
        return made[key]

    return get


@pytest.fixture(scope="session")
def mobile_exports(frozen_by_format, face_halves, tmp_path_factory):
    return exports_of(lambda fmt: frozen_by_format[fmt][1], face_halves, tmp_path_factory.mktemp("mobile_exports"))


def verified(reference: KerasRunner, result, target, held) -> dict:
    """verify's report of one export against the Keras model on the held-out faces."""
    from facecvt.validate.verify import InputSpec, verify

    return verify(reference, [(BACKEND[target], result.path)], InputSpec(images=held))


def rows_of(report: dict) -> list:
    """(name, pass, failed, max |Δ|, min cosine, max px) of every output row: what a failure shows."""
    return [(r["name"], r["pass"], r["failed"], r.get("max_abs"), r.get("min_cosine"), r.get("max_pixels"))
            for r in report["candidates"][0]["outputs"]]


@pytest.mark.parametrize("fmt,target,precision", MATRIX)
def test_mobilefacenet_every_form_target_and_precision_passes_verify_against_keras(
        mobile_files, mobile_exports, face_halves, fmt, target, precision):
    paths, _, _, model = mobile_files
    result = mobile_exports("mobilefacenet", fmt, target, precision)
    assert result.precision == precision
    report = verified(KerasRunner(model, paths[fmt]), result, target, face_halves[1])
    candidate = report["candidates"][0]
    assert candidate["precision"] == precision and "warnings" not in report  # int8: not scored on its calibration
    assert len(candidate["outputs"]) == 1 and candidate["pass"], rows_of(report)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def test_keras_file_without_its_custom_function_names_it_and_the_option(mobile_files, tmp_path):
    paths = mobile_files[0]
    out = tmp_path / "m.onnx"
    result = invoke("to-onnx", paths["keras"], "-o", out)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scale_residual" in lines[0] and "--custom-objects" in lines[0], result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_inspect_shows_the_loader_and_what_it_found(mobile_files):
    paths = mobile_files[0]
    result = invoke("inspect", paths["keras"], "--custom-objects", paths["custom_objects"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "keras" and report["loader"].startswith("keras 3")
    assert report["found"]["layer_kinds"]["Lambda"] == 1
    assert report["inputs"][0]["name"] == "input" and report["outputs"][0]["name"] == "embedding"
    assert report["unfrozen_variables"] == 0 and report["freeze_plan"]
    text = invoke("inspect", paths["saved_model"])
    assert text.exit_code == 0 and "TF2 SavedModel" in text.stdout and "serving_default" in text.stdout


def test_verify_takes_a_keras_file_as_the_reference(mobile_files, frozen_by_format, tmp_path):
    paths = mobile_files[0]
    onnx = export("onnx", frozen_by_format["h5"][1], tmp_path / "m.onnx").path
    result = invoke("verify", paths["h5"], onnx, "--random", 3, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["reference"] == {"backend": "tensorflow", "path": str(paths["h5"])}
    assert report["candidates"][0]["pass"] and report["inputs"]["count"] == 3


@pytest.fixture(scope="session")
def resnet_files(tmp_path_factory):
    """keras.applications.ResNet50V2(weights=None) at 112x112 with the embedding head, in all three forms."""
    import keras
    import tf_keras

    from facecvt.samples import keras_faces

    model = keras_faces.resnet50v2(keras, embedding_size=128, seed=0)
    keras_faces.randomize_batch_norms(model, seed=2)
    keras2 = keras_faces.resnet50v2(tf_keras, embedding_size=128)
    keras_faces.copy_weights(model, keras2)
    return model, keras_faces.save_all_formats(model, tmp_path_factory.mktemp("keras_r50"), "r50", keras2_model=keras2)


@pytest.fixture(scope="session")
def resnet_frozen(resnet_files) -> dict:
    paths = resnet_files[1]
    return {fmt: freeze(load_model(paths[fmt])).frozen for fmt in FORMS}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMS)
def test_resnet50v2_each_form_freezes_to_the_keras_inference_outputs(resnet_files, resnet_frozen, fmt):
    from facecvt.samples import keras_faces

    frozen = resnet_frozen[fmt]
    assert not {n.op for n in frozen.graph_def.node} & TRAINING_OPS
    x = face_like(3, seed=4)
    got = run_graph(frozen.graph_def, x, frozen.input_name, frozen.output_name)
    assert relative_error(got, keras_faces.reference_outputs(resnet_files[0], x)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("target,precision", [("onnx", "fp32"), ("tflite", "fp32"), ("coreml", "fp32"),
                                              ("onnx", "int8"), ("coreml", "fp16")])
def test_resnet50v2_exports_pass_verify_against_keras(resnet_files, resnet_frozen, face_halves, tmp_path_factory,
                                                      target, precision):
    """From the .keras file (the network is big: one form, the others are checked frozen above)."""
    model, paths = resnet_files
    exports = exports_of(resnet_frozen.get, face_halves, tmp_path_factory.mktemp("r50_exports"))
    report = verified(KerasRunner(model, paths["keras"]), exports("r50", "keras", target, precision), target,
                      face_halves[1])
    assert report["candidates"][0]["precision"] == precision and report["pass"], rows_of(report)


@pytest.mark.slow
def test_keras2_saved_model_folder_matches_keras(tmp_path):
    """tf.keras `model.save(folder)`: the SavedModel (with keras_metadata.pb) seed 004's users exported."""
    import tf_keras

    from facecvt.samples import keras_faces

    model = keras_faces.mobile_facenet(tf_keras, lambda_layer="lambda", **SMALL)
    keras_faces.randomize_batch_norms(model, seed=6)
    model.save(tmp_path / "keras2_saved_model")
    loaded = load_model(tmp_path / "keras2_saved_model")
    assert loaded.found["keras_metadata"] and (loaded.input_name, loaded.output_name) == ("input", "embedding")
    x = face_like(3, seed=7)
    got = run_graph(freeze(loaded).frozen.graph_def, x, "input", "embedding")
    assert relative_error(got, keras_faces.reference_outputs(model, x)) <= 1e-5


# -- a Keras model with several outputs: O-Net's layout, heads returned as a dict ---------------------

@pytest.fixture(scope="session")
def detector_files(tmp_path_factory):
    """The small face detector as .keras, Keras-2 .h5 and SavedModel, its Keras 3 model and outputs."""
    import keras
    import tf_keras

    from facecvt.samples import keras_faces

    folder = tmp_path_factory.mktemp("keras_detector")
    model = keras_faces.face_detector(keras, seed=0)
    assert keras_faces.randomize_batch_norms(model, seed=11) == 3
    keras2 = keras_faces.face_detector(tf_keras)
    keras_faces.copy_weights(model, keras2)
    paths = keras_faces.save_all_formats(model, folder, "detector", keras2_model=keras2)
    x = face_like(4, seed=12, size=48)
    expected = keras_faces.reference_outputs(model, x)
    assert sorted(expected) == ["box", "landmarks", "prob"]
    for name, value in keras_faces.reference_outputs(keras2, x).items():
        assert relative_error(value, expected[name]) < 1e-5, name
    return model, paths, x, expected


@pytest.mark.parametrize("fmt", ["keras", "h5", "saved_model"])
def test_each_format_keeps_every_output_of_a_dict_model_under_its_own_name(detector_files, fmt):
    """Before: the Keras loaders named the dict's outputs in one order and froze them in another
    ('box' held the (N, 2) probabilities)."""
    _, paths, x, expected = detector_files
    frozen = freeze(load_model(paths[fmt])).frozen
    assert sorted(frozen.output_names) == ["box", "landmarks", "prob"]
    for name in frozen.output_names:
        assert frozen.output_shapes[name] == (None, expected[name].shape[1]), name
        got = run_graph(frozen.graph_def, x, frozen.input_name, name)
        assert relative_error(got, expected[name]) <= 1e-5, name


@pytest.fixture(scope="session")
def detector_frozen(detector_files) -> dict:
    paths = detector_files[1]
    return {fmt: freeze(load_model(paths[fmt])).frozen for fmt in FORMS}


@pytest.fixture(scope="session")
def detector_exports(detector_frozen, face_halves, tmp_path_factory):
    return exports_of(detector_frozen.get, face_halves, tmp_path_factory.mktemp("detector_exports"))


@pytest.mark.parametrize("fmt,target,precision", MATRIX)
def test_detector_every_form_target_and_precision_passes_verify_per_output_against_keras(
        detector_files, detector_exports, face_halves, fmt, target, precision):
    """A verify row per output, each judged by what it holds: the probability by |Δp|, the box and the
    landmarks in pixels at 48x48 (int8: calibrated on windows of the other faces, a box output's plan)."""
    model, paths, _, _ = detector_files
    result = detector_exports("detector", fmt, target, precision)
    if precision == "int8":
        assert result.details["quantization"]["calibration_plan"].startswith("windows")
    report = verified(KerasRunner(model, paths[fmt]), result, target, face_halves[1])
    rows = report["candidates"][0]["outputs"]
    assert [(r["name"], r["kind"]) for r in rows] == [("box", "box"), ("landmarks", "landmarks"), ("prob", "prob")]
    assert "warnings" not in report and all(r["pass"] for r in rows), rows_of(report)


def test_verify_against_keras_fails_an_export_of_the_training_mode_model(mobile_files, mobile_exports, face_halves):
    """The check has teeth: Keras run with training=True (batch statistics, dropout) is not what the
    export computes, and verify says so on the same faces that pass above."""

    class TrainingMode(KerasRunner):
        def _infer(self, batch):
            return [np.asarray(self.model(batch, training=True))]

    paths, _, _, model = mobile_files
    result = mobile_exports("mobilefacenet", "h5", "onnx", "fp32")
    report = verified(TrainingMode(model, paths["h5"]), result, "onnx", face_halves[1])
    assert not report["pass"] and {"max_abs", "min_cosine"} <= set(report["candidates"][0]["failed"])
