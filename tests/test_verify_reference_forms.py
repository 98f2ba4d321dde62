"""`verify` reads its reference in every form `export` accepts, through the same loader and options:
`--signature` picks a SavedModel signature, `--custom-objects` supplies the function a `.keras`
file's Lambda names (issue 11)."""

from __future__ import annotations

import json

import pytest

from facecvt.samples import foreign_inputs

from test_bad_input import assert_clean_failure, invoke

# what --custom-objects gets: the function the .keras file names but does not hold
FUNCTIONS = "def scale_features(x, scale):\n    return x * scale\n"


def scale_features(x, scale):
    return x * scale


@pytest.fixture(scope="module")
def two_signatures(tmp_path_factory):
    """A TF2 SavedModel whose `embed` signature returns a vector and whose `serving_default` returns it
    L2-normalised; and the ONNX export of `embed`."""
    folder = tmp_path_factory.mktemp("two_signatures")
    model = folder / "saved_model"
    foreign_inputs.write_tf2_module_saved_model(model, signature="embed", with_default=True)
    onnx = folder / "embed.onnx"
    result = invoke("to-onnx", model, "-o", onnx, "--signature", "embed")
    assert result.exit_code == 0, result.output
    return model, onnx


def test_signature_picks_the_signature_the_export_was_made_from(two_signatures, tmp_path):
    model, onnx = two_signatures
    report_path = tmp_path / "verify.json"
    result = invoke("verify", model, onnx, "--random", 4, "--signature", "embed", "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["pass"] and report["outputs"][0]["name"] == "vector"
    # serving_default (the default) computes another vector: the same export is out of tolerance against it
    assert invoke("verify", model, onnx, "--random", 4).exit_code == 1


def test_a_signature_the_model_lacks_is_refused_naming_the_ones_it_has(two_signatures, tmp_path):
    model, onnx = two_signatures
    report_path = tmp_path / "verify.json"
    line = assert_clean_failure(invoke("verify", model, onnx, "--random", 2, "--signature", "unit",
                                       "--json", report_path), 2, "'unit'", "embed, serving_default", "--signature")
    assert "no signature" in line and not report_path.exists()
    # the reference options read a TensorFlow or Keras model, not an export
    assert_clean_failure(invoke("verify", onnx, onnx, "--random", 2, "--signature", "embed"), 2,
                         "--signature reads a TensorFlow or Keras reference", "onnxruntime")


@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory):
    """A Keras 3 `.keras` model with a Lambda whose function (stored by name only) is in functions.py;
    and its ONNX export, made with --custom-objects."""
    from facecvt.core.tf_env import import_tf

    import_tf()
    import keras

    folder = tmp_path_factory.mktemp("lambda_keras")
    (folder / "functions.py").write_text(FUNCTIONS)
    inputs = keras.Input((16, 16, 3), name="input")
    net = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    net = keras.layers.Lambda(scale_features, arguments={"scale": 0.5}, name="scale")(net)
    net = keras.layers.Dense(8, name="embedding")(keras.layers.GlobalAveragePooling2D(name="pool")(net))
    model = folder / "lambda.keras"
    keras.Model(inputs, net).save(model)
    onnx = folder / "lambda.onnx"
    result = invoke("to-onnx", model, "-o", onnx, "--custom-objects", folder / "functions.py")
    assert result.exit_code == 0, result.output
    return model, onnx, folder / "functions.py"


def test_custom_objects_supply_the_lambda_function_of_the_reference(lambda_keras, tmp_path):
    model, onnx, functions = lambda_keras
    result = invoke("verify", model, onnx, "--random", 4, "--custom-objects", functions)
    assert result.exit_code == 0, result.output
    report_path = tmp_path / "verify.json"
    line = assert_clean_failure(invoke("verify", model, onnx, "--random", 4, "--json", report_path), 2,
                                "'scale_features'", "--custom-objects")
    assert str(model) in line and not report_path.exists()
