"""Keras face-embedding models built the way Keras insightface (seed 004) builds them.

Two backbones, each with that project's embedding head (BatchNormalization, Dropout, Flatten,
Dense, BatchNormalization named `embedding`, no L2 normalisation):

- `mobile_facenet`: conv/depthwise/PReLU/batch-norm bottlenecks and a global depthwise conv
  (GDC) at 112x112, with a width multiplier and block repeats so tests can keep it small;
- `resnet50v2`: `applications.ResNet50V2(weights=None, include_top=False)` at 112x112.

And a small detector stage with several outputs, `face_detector`: O-Net's layout in Keras layers
(conv, batch norm, PReLU, max pool; a dense layer; a softmax face probability, a box and five
landmarks), its outputs a dict as Keras models with named heads return them.

Every builder takes the Keras module to build with: Keras 3 (`keras`), or Keras 2 (`tf_keras`)
to write `.h5` files exactly as Keras 2 / tf.keras did. Batch-norm statistics are randomised
(`randomize_batch_norms`) so that a wrong fold shows in the outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 112
RESIDUAL_SCALE = 0.2


def scale_residual(x, scale):
    """A Lambda's function, as facenet_keras scales its residuals (`arguments={"scale": 0.2}`)."""
    return x * scale


def _keras(module=None, seed: int | None = None):
    """The Keras module to build with (Keras 3 by default), its weight initialisers seeded when `seed` is given."""
    if module is None:
        from facecvt.core.tf_env import import_tf

        import_tf()
        import keras as module
    if seed is not None:
        module.utils.set_random_seed(seed)
    return module


def embedding_head(keras, features, embedding_size: int, dropout: float = 0.4):
    """Keras insightface's `buildin_models` head on a backbone's feature map."""
    layers = keras.layers
    net = layers.BatchNormalization(name="head_bn")(features)
    net = layers.Dropout(dropout, name="head_dropout")(net)
    net = layers.Flatten(name="head_flatten")(net)
    net = layers.Dense(embedding_size, use_bias=False, kernel_initializer="glorot_normal", name="head_dense")(net)
    return layers.BatchNormalization(name="embedding")(net)


def _conv_block(keras, x, filters, kernel, strides, padding, name):
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)


def _bottleneck(keras, x, filters, expansion, strides, residual, name):
    layers = keras.layers
    channels = int(x.shape[-1]) * expansion
    y = _conv_block(keras, x, channels, 1, 1, "same", f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.PReLU(shared_axes=[1, 2], name=f"{name}_dw_prelu")(y)
    y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    return layers.Add(name=f"{name}_add")([y, x]) if residual else y


def mobile_facenet(keras=None, *, embedding_size: int = 128, width: float = 1.0, repeats=(5, 1, 6, 1, 2),
                   dropout: float = 0.4, lambda_layer: str | None = None, name: str = "mobile_facenet",
                   seed: int | None = None):
    """MobileFaceNet (Chen et al. 2018) as seed 004's `mobile_facenet.py` writes it.

    `width` scales every channel count and `repeats` the bottleneck stages, so tests can build a
    small one. `lambda_layer` adds one `Lambda` on the first residual: "lambda" (a Python lambda,
    whose code Keras 2's `.h5` stores) or "function" (`scale_residual`, stored by name only).
    `seed` seeds the weight initialisers (the same network every run).
    """
    keras = _keras(keras, seed)
    layers = keras.layers
    channels = lambda c: max(8, int(c * width))  # noqa: E731
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="input")
    x = _conv_block(keras, inputs, channels(64), 3, 2, "same", "stem")
    x = layers.SeparableConv2D(channels(64), 3, padding="same", use_bias=False, name="stem_sep")(x)
    x = layers.BatchNormalization(name="stem_sep_bn")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="stem_sep_prelu")(x)
    stages = ((64, 2, 2), (128, 4, 2), (128, 2, 1), (128, 4, 2), (128, 2, 1))  # filters, expansion, stride
    for stage, ((filters, expansion, stride), count) in enumerate(zip(stages, repeats)):
        for block in range(count):
            residual = block > 0
            x_in = x
            x = _bottleneck(keras, x, channels(filters), expansion, stride if block == 0 else 1, False,
                            f"stage{stage}_block{block}")
            if residual:
                if lambda_layer and stage == 0 and block == 1:
                    function = (lambda t, scale: t * scale) if lambda_layer == "lambda" else scale_residual
                    x = layers.Lambda(function, arguments={"scale": RESIDUAL_SCALE}, name="scale_residual")(x)
                x = layers.Add(name=f"stage{stage}_block{block}_add")([x, x_in])
    x = _conv_block(keras, x, channels(512), 1, 1, "valid", "last")
    x = layers.DepthwiseConv2D(int(x.shape[1]), padding="valid", use_bias=False, name="gdc")(x)  # global depthwise
    x = layers.BatchNormalization(name="gdc_bn")(x)
    return keras.Model(inputs, embedding_head(keras, x, embedding_size, dropout), name=name)


def resnet50v2(keras=None, *, embedding_size: int = 512, dropout: float = 0.4, name: str = "resnet50v2_face",
               seed: int | None = None):
    """`applications.ResNet50V2(weights=None, include_top=False)` at 112x112 with the embedding head."""
    keras = _keras(keras, seed)
    backbone = keras.applications.ResNet50V2(weights=None, include_top=False,
                                             input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return keras.Model(backbone.inputs[0], embedding_head(keras, backbone.outputs[0], embedding_size, dropout),
                       name=name)


DETECTOR_SIZE = 48
DETECTOR_OUTPUTS = ("prob", "box", "landmarks")


def face_detector(keras=None, *, channels=(16, 32, 32), hidden: int = 64, dropout: float = 0.25,
                  name: str = "face_detector", seed: int | None = None):
    """An O-Net-like detector stage at 48x48: outputs {"prob": (N, 2) softmax, "box": (N, 4),
    "landmarks": (N, 10)}; `seed` seeds the weight initialisers."""
    keras = _keras(keras, seed)
    layers = keras.layers
    inputs = keras.Input(shape=(DETECTOR_SIZE, DETECTOR_SIZE, 3), name="input")
    x = inputs
    for index, filters in enumerate(channels, start=1):
        x = layers.Conv2D(filters, 3, name=f"conv{index}")(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.PReLU(shared_axes=[1, 2], name=f"prelu{index}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(hidden, name="fc")(x)
    x = layers.PReLU(name="prelu_fc")(x)
    x = layers.Dropout(dropout, name="fc_dropout")(x)
    outputs = {"prob": layers.Dense(2, activation="softmax", name="prob")(x),
               "box": layers.Dense(4, name="box")(x),
               "landmarks": layers.Dense(10, name="landmarks")(x)}
    return keras.Model(inputs, outputs, name=name)


def randomize_batch_norms(model, seed: int = 0) -> int:
    """Give every BatchNormalization random gamma, beta, moving mean and moving variance (and every
    PReLU a random alpha), as a trained model has; returns the number of batch norms changed."""
    rng = np.random.default_rng(seed)
    changed = 0
    for layer in _all_layers(model):
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0.0, 0.2, beta.shape).astype(np.float32),
                               rng.normal(0.0, 0.2, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 2.0, variance.shape).astype(np.float32)])
            changed += 1
        elif kind == "PReLU":
            (alpha,) = layer.get_weights()
            layer.set_weights([rng.uniform(0.05, 0.4, alpha.shape).astype(np.float32)])
    return changed


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def save_all_formats(model, folder: Path, stem: str, *, keras2_model=None) -> dict:
    """Write `model` as `.keras`, Keras-3 legacy `.h5` and SavedModel (`model.export`), and
    `keras2_model` (the same network built with tf_keras) as a Keras-2 `.h5`. Returns format -> path."""
    folder = Path(folder)
    paths = {"keras": folder / f"{stem}.keras", "h5_keras3": folder / f"{stem}_keras3.h5",
             "saved_model": folder / f"{stem}_saved_model"}
    model.save(paths["keras"])
    model.save(paths["h5_keras3"])
    model.export(str(paths["saved_model"]), verbose=False)
    if keras2_model is not None:
        paths["h5"] = folder / f"{stem}_keras2.h5"
        keras2_model.save(paths["h5"])
    return paths


def copy_weights(source, target) -> None:
    """Give `target` (the same network, built with another Keras) `source`'s weights, layer by layer."""
    for src, dst in zip(_all_layers(source), _all_layers(target), strict=True):
        dst.set_weights(src.get_weights())


def reference_outputs(model, images: np.ndarray):
    """The Keras model's outputs in inference mode (training=False): an array, or {name: array} for a
    model whose outputs are a dict."""
    outputs = model(images, training=False)
    if isinstance(outputs, dict):
        return {name: np.asarray(value) for name, value in outputs.items()}
    return np.asarray(outputs)
