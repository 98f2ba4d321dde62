"""Keras files -> a frozen GraphDef of the model's inference call (`training=False`).

- `.keras` (Keras 3): `keras.saving.load_model`, safe mode on. Such a file stores a `Lambda`'s
  function or a custom layer only by name: `--custom-objects module.py` supplies them.
- `.h5`/`.hdf5` (legacy, as Keras 2 / tf.keras and Keras 3 write them): Keras 3's legacy HDF5
  loader, with safe mode OFF, because a Keras-2 `.h5` stores each `Lambda`'s Python code and
  loading it runs that code (only convert files you trust; facecvt rebuilds those functions itself,
  see core/keras_lambdas.py). Keras 3 refuses some Keras-2 layer
  configurations (e.g. a `SeparableConv2D` with Keras-2-only arguments); such a file is then read
  by Keras 2 itself (the `tf-keras` package), and `inspect` says which reader did it.

The model is traced once as a `tf.function` at its own input shape with `training=False`, so batch
norms use their moving statistics (folded later by the freeze pipeline), dropout is gone and no
training flag is left. The Placeholder is named after the Keras input, each output node after the
Keras output.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.function_graph import LoadedGraph, frozen_graph_def, legal_node_name
from facecvt.core.keras_lambdas import config_naming, patched_copy, rebuild_lambdas

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
# Keras' ways of saying that a saved name resolves to nothing it knows
_UNKNOWN_OBJECT = re.compile(
    r"(?:Could not locate (?:class|function) |Unknown (?:layer|object|class|function)(?: type)?:? |"
    r"Could not deserialize (?:class|function) )'?([\w.>]+)'?")


def custom_objects_from(path) -> dict:
    """The public callables and classes of the Python file `path` (`--custom-objects`)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise FacecvtError(f"--custom-objects {path}: give a Python file (.py) that defines the model's "
                           f"custom layers and functions")
    name = f"facecvt_custom_objects_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report its own error, on one line
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise FacecvtError(f"--custom-objects {path} fails to import ({type(error).__name__}: {first}); "
                           f"fix the file so `python {path}` runs") from None
    return {key: value for key, value in vars(module).items()
            if not key.startswith("_") and callable(value)}


def load_keras_file(path: Path, custom_objects_path=None) -> LoadedGraph:
    """Read a `.keras` or `.h5` file and freeze its inference call."""
    custom = custom_objects_from(custom_objects_path)
    suffix = path.suffix.lower()
    with warnings.catch_warnings():  # Keras warns about legacy formats and Lambda modules on stderr
        warnings.simplefilter("ignore")
        if suffix in KERAS_SUFFIXES:
            model, reader, lambdas = _load_keras3(path, custom), _keras_version("keras 3 (.keras)"), []
            kind = "keras"
        else:
            model, reader, lambdas = _load_h5(path, custom)
            kind = "h5"
        loaded = keras_model_graph(model, kind=kind, loader=reader)
    if kind == "h5" and lambdas:
        loaded.found["lambda_code"] = (f"{len(lambdas)} Lambda layers rebuilt from the Python code the file stores "
                                       f"(safe mode off: convert only files you trust) or from --custom-objects "
                                       f"functions named after them: {', '.join(lambdas[:5])}")
    return loaded


def _keras_version(label: str) -> str:
    import keras

    return label.replace("keras 3", f"keras {keras.__version__}")


def _load_keras3(path: Path, custom: dict):
    from facecvt.core.tf_env import import_tf

    import_tf()
    import keras

    if not zipfile.is_zipfile(path):
        raise FacecvtError(f"{path} is not a Keras 3 .keras file (not a zip archive); save the model again "
                           f"with model.save('{path.name}')")
    try:
        return keras.saving.load_model(path, custom_objects=custom, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, AttributeError) as error:
        raise _keras_load_error(path, error) from None


def _load_h5(path: Path, custom: dict):
    """Keras 3's legacy HDF5 loader; Keras 2 (`tf_keras`) when Keras 3 refuses the file's config.
    Stored Lambda code is rebuilt by facecvt first (core/keras_lambdas.py). Returns (model, reader,
    names of the Lambda layers rebuilt)."""
    from facecvt.core.tf_env import import_tf

    import_tf()
    import h5py
    import keras

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise FacecvtError(f"{path} holds weights only (no model_config); save the whole model "
                                   f"(model.save, not save_weights)")
            written_by = handle.attrs.get("keras_version", b"?")
            model_config = handle.attrs["model_config"]
    except OSError:
        raise FacecvtError(f"{path} is not an HDF5 file (truncated or another format); "
                           f"save the Keras model again") from None
    written_by = written_by.decode() if isinstance(written_by, bytes) else str(written_by)
    model_config = model_config.decode() if isinstance(model_config, bytes) else str(model_config)
    functions = rebuild_lambdas(path, model_config, custom)
    with tempfile.TemporaryDirectory(prefix="facecvt_h5_") as folder:

        def readable_by(style: str) -> tuple[Path, dict]:
            """The file a Keras of `style` reads, and its custom objects: a copy whose Lambdas name
            the functions facecvt rebuilt, when there are any."""
            if not functions:
                return path, custom
            config, objects = config_naming(model_config, functions, style)
            copy = Path(folder) / f"{style}_{path.name}"
            patched_copy(path, copy, config)
            return copy, {**custom, **objects}

        model, reader = _load_h5_with_keras(path, readable_by, written_by)
    return model, reader, list(functions)


def _load_h5_with_keras(path: Path, readable_by, written_by: str):
    import keras

    source, objects = readable_by("keras3")
    try:
        model = keras.models.load_model(source, custom_objects=objects, compile=False, safe_mode=False)
        return model, f"keras {keras.__version__} legacy HDF5 loader (file written by Keras {written_by})"
    except (ValueError, TypeError, KeyError, AttributeError, NameError) as error:
        if _UNKNOWN_OBJECT.search(str(error)) or isinstance(error, NameError):
            raise _keras_load_error(path, error) from None
        keras3_error = error
    try:
        import tf_keras
    except ImportError:
        raise _keras_load_error(path, keras3_error, hint="; install tf-keras to read it with Keras 2") from None
    source, objects = readable_by("keras2")
    try:
        model = tf_keras.models.load_model(source, custom_objects=objects, compile=False, safe_mode=False)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, NameError) as error:
        raise _keras_load_error(path, error) from None
    first = (str(keras3_error).strip().splitlines() or [""])[0][:120]
    return model, (f"tf_keras {tf_keras.__version__} (Keras 2; file written by Keras {written_by}; Keras 3 "
                   f"refused it: {first})")


def _keras_load_error(path: Path, error: Exception, hint: str = "") -> FacecvtError:
    text = str(error)
    unknown = _UNKNOWN_OBJECT.search(text)
    if unknown:
        name = unknown.group(1).split(">")[-1]
        return FacecvtError(f"{path} uses {name!r}, a custom layer or function that is not in the file; "
                            f"pass the Python file that defines it with --custom-objects FILE.py")
    if isinstance(error, NameError):
        return FacecvtError(f"{path}: a Lambda layer's code uses a name facecvt does not provide ({text}); "
                            f"define it in a file and pass it with --custom-objects FILE.py")
    if "arbitrary code execution" in text:
        return FacecvtError(f"{path} holds a Lambda with Python code, which a .keras file loads only unsafely; "
                            f"save the function by name and pass its file with --custom-objects FILE.py")
    first = (text.strip().splitlines() or [type(error).__name__])[0][:300]
    return FacecvtError(f"Keras cannot read {path}: {first}{hint or '; save the model again with model.save'}")


def keras_model_graph(model, *, kind: str = "keras", loader: str = "keras") -> LoadedGraph:
    """The frozen GraphDef of `model(inputs, training=False)` at the model's own input shapes."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    input_names = [legal_node_name(_tensor_name(t)) for t in model.inputs]
    specs = [tf.TensorSpec(t.shape, t.dtype, name=name) for t, name in zip(model.inputs, input_names)]
    output_names = _output_names(model)
    dict_keys = []  # a model returning a dict: its keys, in the order the function returns the values

    def call(*tensors):
        outputs = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        if not isinstance(outputs, dict):
            return tf.nest.flatten(outputs)
        # the values by name: the dict's own order need not be output_names' (Keras 3 sorts one of them)
        dict_keys[:] = output_names if sorted(output_names) == sorted(outputs) else sorted(outputs)
        return [outputs[key] for key in dict_keys]

    concrete = tf.function(call).get_concrete_function(*specs)
    output_names = list(dict_keys) or output_names
    graph_def, mapping = frozen_graph_def(concrete, output_names)
    layers = list(_layer_kinds(model))
    found = {"model": f"{type(model).__name__} {model.name!r}", "layers": len(layers),
             "layer_kinds": {k: layers.count(k) for k in sorted(set(layers))},
             "inputs": {name: _tensor_name(t) for name, t in zip(input_names, model.inputs)},
             "outputs": {name: keras_name for name, keras_name in zip(mapping, output_names)},
             "training": False}
    return LoadedGraph(graph_def=graph_def, kind=kind, loader=loader, inputs=input_names,
                       outputs=list(mapping), found=found)


def _tensor_name(tensor) -> str:
    """A Keras input's name: its InputLayer's (Keras 2 appends ':0' to the tensor's)."""
    history = getattr(tensor, "_keras_history", None)
    if history is not None and getattr(history, "layer", None) is not None:
        return history.layer.name
    return str(getattr(tensor, "name", "input")).split(":")[0]


def _output_names(model) -> list:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [_tensor_name(t) for t in model.outputs]
    return names


def _layer_kinds(model):
    for layer in model.layers:
        if getattr(layer, "layers", None):
            yield from _layer_kinds(layer)
        else:
            yield type(layer).__name__
