"""Inputs other tools write: TF1 and TF2 SavedModels, a .pb that still holds variables, Keras files with
custom layers; and the bad ones among them (exit 2, one line naming problem and fix, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze
from facecvt.samples import foreign_inputs

from conftest import run_graph
from test_bad_input import assert_clean_failure

K = None  # Keras 2's backend, set by the l2_lambda_h5 fixture

CUSTOM_LAYER = '''
import keras


class L2Scale(keras.layers.Layer):
    """Scales each pixel's channels by a learned factor."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale
'''


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).normal(0, 1, (4, 16, 16, 3)).astype(np.float32)


def test_tf1_saved_model_of_a_training_graph_freezes(tmp_path, images):
    folder = tmp_path / "tf1_saved_model"
    expected = foreign_inputs.write_tf1_saved_model(folder, images)
    model = load_model(folder)
    assert model.kind == "saved_model" and "TF1" in model.loader and model.found["format"] == "TF1 SavedModel"
    assert (model.input_name, model.output_name) == ("input", "embeddings")
    assert model.training_flags == {"phase_train": False}
    frozen = freeze(model).frozen
    assert not {n.op for n in frozen.graph_def.node} & TRAINING_OPS
    assert np.abs(run_graph(frozen.graph_def, images) - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def module_saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf2") / "tiny_module"
    module = foreign_inputs.write_tf2_module_saved_model(folder, signature="embed")
    return folder, module


def test_tf2_saved_model_signature_is_chosen_by_name(module_saved_model, images):
    folder, module = module_saved_model
    model = load_model(folder, signature="embed")
    assert (model.input_name, model.output_name) == ("face", "vector")
    assert model.found["signatures"] == ["embed"] and model.found["outputs"] == {"vector": "vector"}
    frozen = freeze(model).frozen
    expected = module(images)["vector"].numpy()
    assert np.abs(run_graph(frozen.graph_def, images, "face", "vector") - expected).max() <= 1e-5


def test_saved_model_without_the_asked_signature(module_saved_model, tmp_path):
    folder, _ = module_saved_model
    out = tmp_path / "m.pb"
    line = assert_clean_failure(invoke("freeze", folder, "-o", out), 2, "serving_default", "embed", "--signature")
    assert "no signature" in line and not out.exists()
    assert_clean_failure(invoke("to-onnx", folder, "-o", tmp_path / "m.onnx", "--signature", "embedd"), 2,
                         "'embedd'", "did you mean")
    assert not list(tmp_path.iterdir())


def test_output_that_is_not_a_tensor_of_the_graph(module_saved_model, tmp_path):
    folder, _ = module_saved_model
    out = tmp_path / "m.tflite"
    assert_clean_failure(invoke("to-tflite", folder, "-o", out, "--signature", "embed", "--output", "vectr"), 2,
                         "--output", "vectr", "vector")
    assert not out.exists()


def test_pb_with_leftover_variables_says_so_and_its_checkpoint_freezes(tmp_path):
    pb, checkpoint = foreign_inputs.write_partly_frozen(tmp_path / "partly_frozen.pb", tmp_path / "checkpoint")
    report = invoke("inspect", pb)
    assert report.exit_code == 0, report.output
    text = " ".join(report.stdout.split())
    assert "variables were never frozen" in text and "checkpoint folder" in text
    out = tmp_path / "clean.pb"
    line = assert_clean_failure(invoke("freeze", pb, "-o", out), 2, "never frozen", "checkpoint folder")
    assert "cond predicate" not in line and not out.exists()
    result = invoke("freeze", checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file()


@pytest.fixture(scope="module")
def custom_layer_files(tmp_path_factory):
    """A Keras 3 .keras and a Keras-2 .h5 (written by tf_keras), both using the unregistered layer L2Scale."""
    import keras
    import tf_keras

    folder = tmp_path_factory.mktemp("custom_layer")
    (folder / "layers_file.py").write_text(CUSTOM_LAYER)
    namespace = {}
    exec(compile(CUSTOM_LAYER, "layers_file.py", "exec"), namespace)

    class L2Scale(tf_keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    files = {}
    for name, api, layer in (("keras", keras, namespace["L2Scale"]), ("h5", tf_keras, L2Scale)):
        inputs = api.Input((16, 16, 3), name="input")
        net = layer(name="l2_scale")(api.layers.Conv2D(4, 3, name="conv")(inputs))
        outputs = api.layers.Dense(8, name="embedding")(api.layers.GlobalAveragePooling2D(name="pool")(net))
        model = api.Model(inputs, outputs)
        files[name] = folder / ("custom.keras" if name == "keras" else "custom_keras2.h5")
        model.save(files[name])
    files["custom_objects"] = folder / "layers_file.py"
    return files


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_file_with_an_unknown_custom_layer(custom_layer_files, tmp_path, fmt):
    out = tmp_path / "m.onnx"
    assert_clean_failure(invoke("to-onnx", custom_layer_files[fmt], "-o", out), 2, "'L2Scale'", "--custom-objects")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_custom_objects_file_supplies_the_layer(custom_layer_files, tmp_path):
    out = tmp_path / "m.pb"
    result = invoke("freeze", custom_layer_files["keras"], "-o", out, "--custom-objects",
                    custom_layer_files["custom_objects"])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('no')\n")
    assert_clean_failure(invoke("inspect", custom_layer_files["keras"], "--custom-objects", bad), 2,
                         "broken.py", "RuntimeError")


def test_keras2_h5_lambda_code_loads_in_keras3(tmp_path, images):
    """A Keras-2 .h5 stores a Lambda's Python code; Keras 3's legacy loader runs it (safe mode off)."""
    import tf_keras

    inputs = tf_keras.Input((16, 16, 3), name="input")
    net = tf_keras.layers.Conv2D(6, 3, name="conv")(inputs)
    net = tf_keras.layers.BatchNormalization(name="bn")(net)
    net = tf_keras.layers.Lambda(lambda x, scale: x * scale, arguments={"scale": 0.17}, name="scaling")(net)
    net = tf_keras.layers.Dense(5, name="embedding")(tf_keras.layers.GlobalAveragePooling2D()(net))
    model = tf_keras.Model(inputs, net)
    model.get_layer("bn").set_weights([np.full(6, 1.5, np.float32), np.full(6, 0.2, np.float32),
                                       np.full(6, 0.3, np.float32), np.full(6, 2.0, np.float32)])
    model.save(tmp_path / "lambda_keras2.h5")
    loaded = load_model(tmp_path / "lambda_keras2.h5")
    assert "legacy HDF5 loader" in loaded.loader and "Keras 2.21" in loaded.loader
    assert loaded.found["layer_kinds"]["Lambda"] == 1
    frozen = freeze(loaded).frozen
    expected = model(images, training=False).numpy()
    assert np.abs(run_graph(frozen.graph_def, images, "input", "embedding") - expected).max() <= 1e-5


def malformed_inputs(folder) -> dict:
    """name -> a Keras file or SavedModel folder that is broken the way files get broken."""
    import zipfile

    rng = np.random.default_rng(0)
    files = {"keras_not_zip": folder / "model.keras", "keras_empty_zip": folder / "empty.keras",
             "h5_random": folder / "random.h5", "h5_weights_only": folder / "weights.h5",
             "saved_model_garbage": folder / "garbage_saved_model"}
    files["keras_not_zip"].write_bytes(rng.bytes(3000))
    with zipfile.ZipFile(files["keras_empty_zip"], "w") as archive:
        archive.writestr("notes.txt", "nothing here")
    files["h5_random"].write_bytes(rng.bytes(3000))
    import h5py

    with h5py.File(files["h5_weights_only"], "w") as handle:
        handle.create_dataset("conv/kernel", data=np.zeros((3, 3, 3, 4), np.float32))
    files["saved_model_garbage"].mkdir()
    (files["saved_model_garbage"] / "saved_model.pb").write_bytes(b"\x0a\xff\xff" + rng.bytes(200))
    return files


@pytest.mark.parametrize("case", ["keras_not_zip", "keras_empty_zip", "h5_random", "h5_weights_only",
                                  "saved_model_garbage"])
def test_malformed_keras_and_saved_model_inputs_exit_2(tmp_path, case):
    path = malformed_inputs(tmp_path)[case]
    out = tmp_path / "out.onnx"
    line = assert_clean_failure(invoke("to-onnx", path, "-o", out))
    assert path.name in line and not out.exists()
    assert_clean_failure(invoke("inspect", path))


def test_keras_files_and_saved_models_are_tensorflow_references(module_saved_model, tmp_path):
    from facecvt.core.targets import backend_for

    folder, _ = module_saved_model
    for path in (tmp_path / "m.keras", tmp_path / "m.h5", folder):
        assert backend_for(path, "reference") == backend_for(path, "candidate") == "tensorflow"
    assert backend_for(tmp_path / "m.pb", "candidate") == "opencv"


@pytest.fixture(scope="module")
def l2_lambda_h5(tmp_path_factory, images):
    """A Keras-2 .h5 whose Lambda calls `K.l2_normalize` (insightface's Keras projects end so); and the
    same file with the Lambda's bytecode replaced by bytes no Python unmarshals (another version's)."""
    import base64
    import json

    import h5py
    import tf_keras

    global K  # the Lambda's code reads a global named K, as Keras 2 projects write it
    K = tf_keras.backend
    folder = tmp_path_factory.mktemp("l2_lambda")
    inputs = tf_keras.Input((16, 16, 3), name="input")
    net = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(6, 3, name="conv")(inputs))
    net = tf_keras.layers.Lambda(lambda x: K.l2_normalize(x, axis=1), name="l2norm")(net)
    model = tf_keras.Model(inputs, net)
    good, foreign = folder / "l2.h5", folder / "l2_foreign_python.h5"
    model.save(good)
    model.save(foreign)
    with h5py.File(foreign, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda")
        layer["config"]["function"][0] = base64.b64encode(b"\xff\x00garbage").decode()
        handle.attrs["model_config"] = json.dumps(config).encode()
    (folder / "l2norm.py").write_text("import tensorflow as tf\n\n\ndef l2norm(x):\n"
                                      "    return tf.math.l2_normalize(x, axis=1)\n")
    return good, foreign, folder / "l2norm.py", model(images, training=False).numpy()


def test_lambda_code_using_the_keras_backend_loads(l2_lambda_h5, images):
    good, _, _, expected = l2_lambda_h5
    loaded = load_model(good)
    assert "l2norm" in loaded.found["lambda_code"]
    got = run_graph(freeze(loaded).frozen.graph_def, images, "input", "l2norm")
    assert np.abs(got - expected).max() <= 1e-5


def test_lambda_code_of_another_python_names_the_layer_and_custom_objects_replace_it(l2_lambda_h5, images,
                                                                                     tmp_path):
    _, foreign, functions, expected = l2_lambda_h5
    out = tmp_path / "m.pb"
    assert_clean_failure(invoke("freeze", foreign, "-o", out), 2, "'l2norm'", "--custom-objects", "def l2norm")
    assert not out.exists()
    loaded = load_model(foreign, custom_objects=functions)
    got = run_graph(freeze(loaded).frozen.graph_def, images, "input", "l2norm")
    assert np.abs(got - expected).max() <= 1e-5
