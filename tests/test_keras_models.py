"""Keras models (seed 004's MobileFaceNet and ResNet50V2 with the insightface embedding head) in every
file format load, freeze and export to outputs that match Keras itself run with training=False."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze
from facecvt.validate.runners import load_runner
from facecvt.workflows.export_artifact import export

from conftest import run_graph

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


@pytest.fixture(scope="module")
def mobile_files(tmp_path_factory):
    """The small MobileFaceNet as .keras (Lambda by name), Keras-2 .h5 (Lambda code stored, written by
    tf_keras as tf.keras did), and Keras 3 SavedModel; with the Keras model's own outputs."""
    import keras
    import tf_keras

    from facecvt.samples import keras_faces

    folder = tmp_path_factory.mktemp("keras_mobile")
    model = keras_faces.mobile_facenet(keras, lambda_layer="function", **SMALL)
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
    return paths, x, expected


@pytest.fixture(scope="module")
def frozen_by_format(mobile_files):
    paths, _, _ = mobile_files
    frozen = {}
    for fmt in ("keras", "h5", "h5_keras3", "saved_model"):
        needs_custom = fmt in ("keras", "h5_keras3")  # Keras 3 stores the Lambda's function by name
        model = load_model(paths[fmt], custom_objects=paths["custom_objects"] if needs_custom else None)
        frozen[fmt] = (model, freeze(model).frozen)
    return frozen


@pytest.mark.parametrize("fmt", ["keras", "h5", "h5_keras3", "saved_model"])
def test_each_format_freezes_to_the_keras_inference_outputs(frozen_by_format, mobile_files, fmt):
    _, x, expected = mobile_files
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


EXPORTS = [("onnx", {}, ".onnx", "onnxruntime"), ("tflite", {"precision": "fp32"}, ".tflite", "litert")]


@pytest.mark.parametrize("fmt", ["keras", "h5", "saved_model"])
@pytest.mark.parametrize("target,options,suffix,backend", EXPORTS)
def test_onnx_and_tflite_match_keras(frozen_by_format, mobile_files, tmp_path, fmt, target, options, suffix,
                                     backend):
    _, x, expected = mobile_files
    result = export(target, frozen_by_format[fmt][1], tmp_path / f"m{suffix}", **options)
    with load_runner(backend, result.path) as runner:
        got = np.concatenate([runner.embed(x[:1]), runner.embed(x[1:])])
    assert relative_error(got, expected) <= 1e-4


@pytest.mark.parametrize("target,options,suffix,backend", [("opencv", {}, ".pb", "opencv"),
                                                           ("coreml", {"precision": "fp32"}, ".mlpackage", "coreml")])
def test_opencv_and_coreml_match_keras_from_the_keras2_h5(frozen_by_format, mobile_files, tmp_path, target, options,
                                                          suffix, backend):
    _, x, expected = mobile_files
    result = export(target, frozen_by_format["h5"][1], tmp_path / f"m{suffix}", **options)
    runner_options = {"pbtxt": result.extra_paths[0]} if target == "opencv" else {}
    with load_runner(backend, result.path, **runner_options) as runner:
        got = np.concatenate([runner.embed(x[:2]), runner.embed(x[2:])])
    assert relative_error(got, expected) <= 1e-4


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def test_keras_file_without_its_custom_function_names_it_and_the_option(mobile_files, tmp_path):
    paths, _, _ = mobile_files
    out = tmp_path / "m.onnx"
    result = invoke("to-onnx", paths["keras"], "-o", out)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scale_residual" in lines[0] and "--custom-objects" in lines[0], result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_inspect_shows_the_loader_and_what_it_found(mobile_files):
    paths, _, _ = mobile_files
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
    paths, x, _ = mobile_files
    onnx = export("onnx", frozen_by_format["h5"][1], tmp_path / "m.onnx").path
    result = invoke("verify", paths["h5"], onnx, "--random", 3, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["reference"] == {"backend": "tensorflow", "path": str(paths["h5"])}
    assert report["candidates"][0]["pass"] and report["inputs"]["count"] == 3


@pytest.mark.slow
def test_resnet50v2_in_every_format_exports_to_onnx_and_tflite(tmp_path):
    """keras.applications.ResNet50V2(weights=None) at 112x112 with the embedding head, in all three formats."""
    import keras
    import tf_keras

    from facecvt.samples import keras_faces

    model = keras_faces.resnet50v2(keras, embedding_size=128)
    keras_faces.randomize_batch_norms(model, seed=2)
    keras2 = keras_faces.resnet50v2(tf_keras, embedding_size=128)
    keras_faces.copy_weights(model, keras2)
    paths = keras_faces.save_all_formats(model, tmp_path, "r50", keras2_model=keras2)
    x = face_like(3, seed=4)
    expected = keras_faces.reference_outputs(model, x)
    for path, target, suffix, backend in ((paths["keras"], "onnx", ".onnx", "onnxruntime"),
                                          (paths["h5"], "tflite", ".tflite", "litert"),
                                          (paths["saved_model"], "tflite", ".tflite", "litert")):
        frozen = freeze(load_model(path)).frozen
        assert not {n.op for n in frozen.graph_def.node} & TRAINING_OPS
        result = export(target, frozen, tmp_path / f"r50_{path.stem}{suffix}")
        with load_runner(backend, result.path) as runner:
            assert relative_error(runner.embed(x), expected) <= 1e-4, (path, target)


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
    model = keras_faces.face_detector(keras)
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
