"""MIL linear algebra and normalisation ops: linear, matmul, batch/instance/layer/l2 norm."""

from __future__ import annotations

import numpy as np

from facecvt.validate.mil.ops.registry import ints, mil_op


@mil_op("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight (out, in)."""
    y = np.matmul(x, weight.T)
    return y if bias is None else y + bias


@mil_op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    """Batched matmul with NumPy broadcasting; transpose_* swap the last two axes."""
    if transpose_x and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _channel_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


@mil_op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta, per channel (axis 1)."""
    shape = _channel_shape(x)
    scale = 1.0 / np.sqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    y = (x - mean.reshape(shape)) * scale.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


@mil_op("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    """Normalise each (sample, channel) over its spatial axes, then scale/shift per channel."""
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    variance = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(variance + epsilon)
    if gamma is not None:
        y = y * gamma.reshape(_channel_shape(x))
    return y if beta is None else y + beta.reshape(_channel_shape(x))


@mil_op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """Normalise over `axes` (all when None); gamma/beta have the shape of those axes."""
    axes = tuple(a % x.ndim for a in ints(axes)) if axes is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    variance = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(variance + epsilon)
    if gamma is not None:
        y = y * gamma
    return y if beta is None else y + beta


@mil_op("l2_norm")
def l2_norm(x, epsilon=1e-6):
    """x / sqrt(sum(x^2) + epsilon) over the last three axes, the leading ones as batch."""
    flat = x.reshape(int(np.prod(x.shape[:-3])), -1)
    squares = np.sum(flat * flat, axis=1, keepdims=True)
    return (flat / np.sqrt(squares + epsilon)).reshape(x.shape)
