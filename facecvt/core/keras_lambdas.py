"""The Python code a legacy `.h5` stores for each `Lambda` layer, turned into functions facecvt controls.

Keras 2 marshals a Lambda's bytecode into the file. Keras rebuilds it with the globals of its own
module, so code that says `K.l2_normalize(x)` or `tf.nn...` fails with a NameError, and bytecode
written by another Python version does not unmarshal at all. facecvt rebuilds each function itself:

- a function in `--custom-objects` named after the Lambda *layer* replaces the stored code (the
  way out for bytecode of another Python version);
- otherwise the stored code, with `tf`, `np`, `math`, `keras` and `K` (Keras 2's backend) and the
  custom objects as its globals.

Each rebuilt function goes to Keras as a custom object, and the layer's config names it, so Keras never
unmarshals code itself.
"""

from __future__ import annotations

import json
import marshal

from facecvt.core.errors import FacecvtError

PREFIX = "facecvt_lambda_"


def lambda_layers(config) -> list:
    """Every Lambda layer config (nested models included) whose function is stored code."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda" and _stored_code(config.get("config", {}).get("function")):
            found.append(config)
        for value in config.values():
            found.extend(lambda_layers(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(lambda_layers(value))
    return found


def _stored_code(function):
    """(code, defaults, closure) of a marshalled function (Keras 2 list or Keras 3 `__lambda__`), or None."""
    if isinstance(function, list) and len(function) == 3 and isinstance(function[0], str):
        return tuple(function)
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        inner = function.get("config", {})
        return inner.get("code"), inner.get("defaults"), inner.get("closure")
    return None


def _globals(custom: dict) -> dict:
    import builtins
    import math

    import numpy as np

    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    import keras

    try:
        import tf_keras

        backend = tf_keras.backend
    except ImportError:
        backend = keras.backend
    return {"__builtins__": builtins, "tf": tf, "np": np, "numpy": np, "math": math, "keras": keras,
            "K": backend, "backend": backend, **custom}


def _rebuild(path, layer_name: str, stored, globs: dict):
    import types

    from keras.src.utils.python_utils import func_load

    code, defaults, closure = stored
    try:
        function = func_load(code, defaults=defaults, closure=closure)
        return types.FunctionType(function.__code__, globs, function.__name__, function.__defaults__,
                                  function.__closure__)
    except (ValueError, EOFError, TypeError, SystemError, UnicodeError) as error:
        raise FacecvtError(
            f"{path}: the Python code stored for Lambda layer {layer_name!r} does not load here "
            f"({type(error).__name__}: {str(error)[:80]}; written by another Python version?); define "
            f"`def {layer_name}(x, ...)` doing the same in a file and pass it with --custom-objects FILE.py") from None


def rebuild_lambdas(path, model_config: str, custom: dict) -> dict:
    """Lambda layer name -> the function facecvt rebuilt for it (empty when the file stores no code)."""
    layers = lambda_layers(json.loads(model_config))
    if not layers:
        return {}
    globs = _globals(custom)
    functions = {}
    for layer in layers:
        settings = layer["config"]
        name = settings.get("name") or layer.get("name") or "lambda"
        function = custom.get(name)
        functions[name] = function if callable(function) else _rebuild(path, name, _stored_code(settings["function"]),
                                                                       globs)
    return functions


def config_naming(model_config: str, functions: dict, style: str) -> tuple[str, dict]:
    """The model config whose Lambdas name `functions` as custom objects, and those objects.

    `style` is the reader's way to name a function: "keras3" (a `function` config, looked up in the
    custom objects first) or "keras2" (its name, with `function_type` "raw").
    """
    config = json.loads(model_config)
    objects = {}
    for layer in lambda_layers(config):
        settings = layer["config"]
        name = settings.get("name") or layer.get("name") or "lambda"
        key = f"{PREFIX}{len(objects)}"
        objects[key] = functions[name]
        settings["function"] = key if style == "keras2" else {"module": "builtins", "class_name": "function",
                                                              "config": key, "registered_name": "function"}
        settings["function_type"] = "raw"
        settings.pop("module", None)
        if _stored_code(settings.get("output_shape")):  # a shape function: TensorFlow infers the shape anyway
            settings["output_shape"], settings["output_shape_type"] = None, "raw"
    return json.dumps(config), objects


def patched_copy(path, destination, model_config: str) -> None:
    """Copy the HDF5 file `path` to `destination` with `model_config` in place of its own."""
    import h5py

    with h5py.File(path, "r") as source, h5py.File(destination, "w") as target:
        for key in source:
            source.copy(source[key], target, name=key)
        for key, value in source.attrs.items():
            target.attrs[key] = value
        target.attrs["model_config"] = model_config.encode("utf-8")
