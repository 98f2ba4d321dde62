"""MIL activation ops (channel axis 1 where an activation has per-channel parameters)."""

from __future__ import annotations

import numpy as np

from facecvt.validate.mil.ops.elementwise import erf
from facecvt.validate.mil.ops.registry import mil_op


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warning for large |x|


def _per_channel(alpha, x):
    """Broadcast a (C,) parameter along axis 1 of x."""
    return np.reshape(alpha, (1, -1) + (1,) * (x.ndim - 2))


@mil_op("relu")
def relu(x):
    """max(x, 0)."""
    return np.maximum(x, 0)


@mil_op("relu6")
def relu6(x):
    """min(max(x, 0), 6)."""
    return np.clip(x, 0, 6)


@mil_op("sigmoid")
def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return _sigmoid(x)


@mil_op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    """min(max(alpha * x + beta, 0), 1)."""
    return np.clip(alpha * x + beta, 0, 1)


@mil_op("silu")
def silu(x):
    """x * sigmoid(x)."""
    return x * _sigmoid(x)


@mil_op("softplus")
def softplus(x):
    """log(1 + exp(x)), stable for large x."""
    return np.logaddexp(0, x)


@mil_op("softsign")
def softsign(x):
    """x / (1 + |x|)."""
    return x / (1 + np.abs(x))


@mil_op("elu")
def elu(x, alpha=1.0):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@mil_op("leaky_relu")
def leaky_relu(x, alpha=0.01):
    """x if x >= 0 else alpha * x."""
    return np.where(x >= 0, x, alpha * x)


@mil_op("prelu")
def prelu(x, alpha):
    """Leaky relu with one slope per channel (axis 1)."""
    return np.where(x >= 0, x, _per_channel(alpha, x) * x)


@mil_op("clamped_relu")
def clamped_relu(x, alpha, beta):
    """min(leaky_relu(x, alpha), beta)."""
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@mil_op("clip")
def clip(x, alpha, beta):
    """min(max(x, alpha), beta)."""
    return np.minimum(np.maximum(x, alpha), beta)


@mil_op("threshold")
def threshold(x, alpha):
    """max(x, alpha)."""
    return np.maximum(x, alpha)


@mil_op("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """x if x >= alpha else 0."""
    return np.where(x >= alpha, x, 0)


@mil_op("linear_activation")
def linear_activation(x, alpha, beta=0.0):
    """alpha * x + beta."""
    return alpha * x + beta


@mil_op("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    """alpha * tanh(beta * x)."""
    return alpha * np.tanh(beta * x)


@mil_op("gelu")
def gelu(x, mode="EXACT"):
    """gelu with MIL's modes EXACT, TANH_APPROXIMATION and SIGMOID_APPROXIMATION."""
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


@mil_op("softmax")
def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, shifted by the max for stability."""
    e = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
    return e / np.sum(e, axis=int(axis), keepdims=True)
