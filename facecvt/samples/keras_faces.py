"""Keras face-embedding models built the way Keras insightface (seed 004) builds them.

Two backbones, each with that project's embedding head (BatchNormalization, Dropout, Flatten,
Dense, BatchNormalization named `embedding`, no L2 normalisation):

- `mobile_facenet`: conv/depthwise/PReLU/batch-norm bottlenecks and a global depthwise conv
  (GDC) at 112x112, with a width multiplier and block repeats so tests can keep it small;
- `resnet50v2`: `applications.ResNet50V2(weights=None, include_top=False)` at 112x112.

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


def _keras(module=None):
    if module is not None:
        return module
    from facecvt.core.tf_env import import_tf

    import_tf()
    import keras

    return keras


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
                   dropout: float = 0.4, lambda_layer: str | None = None, name: str = "mobile_facenet"):
    """MobileFaceNet (Chen et al. 2018) as seed 004's `mobile_facenet.py` writes it.

    `width` scales every channel count and `repeats` the bottleneck stages, so tests can build a
    small one. `lambda_layer` adds one `Lambda` on the first residual: "lambda" (a Python lambda,
    whose code Keras 2's `.h5` stores) or "function" (`scale_residual`, stored by name only).
    """
    keras = _keras(keras)
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


def resnet50v2(keras=None, *, embedding_size: int = 512, dropout: float = 0.4, name: str = "resnet50v2_face"):
    """`applications.ResNet50V2(weights=None, include_top=False)` at 112x112 with the embedding head."""
    keras = _keras(keras)
    backbone = keras.applications.ResNet50V2(weights=None, include_top=False,
                                             input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return keras.Model(backbone.inputs[0], embedding_head(keras, backbone.outputs[0], embedding_size, dropout),
                       name=name)


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


def reference_outputs(model, images: np.ndarray) -> np.ndarray:
    """The Keras model's outputs in inference mode (training=False)."""
    return np.asarray(model(images, training=False))
