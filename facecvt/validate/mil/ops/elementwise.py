"""Elementwise MIL ops: binary arithmetic and comparisons (NumPy broadcasting, as in MIL) and
unary math, including the ones with an `epsilon` added before the function."""

from __future__ import annotations

import numpy as np

from facecvt.validate.mil.ops.registry import OPS

_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def erf(x):
    """erf to ~1.5e-7 (Abramowitz & Stegun 7.1.26), enough for float32."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
}

# op -> (function of x + epsilon, MIL's default epsilon)
_UNARY_WITH_EPSILON = {
    "rsqrt": (lambda v: 1.0 / np.sqrt(v), 1e-12),
    "inverse": (np.reciprocal, 1e-4),
    "log": (np.log, 1e-45),
}


def _binary(fn):
    def op(x, y):
        return fn(x, y)

    op.__doc__ = f"MIL elementwise {fn.__name__}(x, y) with broadcasting."
    return op


def _unary(fn):
    def op(x):
        return fn(x)

    op.__doc__ = f"MIL elementwise {getattr(fn, '__name__', 'function')}(x)."
    return op


def _unary_with_epsilon(fn, default_epsilon):
    def op(x, epsilon=default_epsilon):
        return fn(x + epsilon)

    op.__doc__ = "MIL unary op applied to x + epsilon."
    return op


for _name, _fn in _BINARY.items():
    OPS[_name] = _binary(_fn)
for _name, _fn in _UNARY.items():
    OPS[_name] = _unary(_fn)
for _name, (_fn, _eps) in _UNARY_WITH_EPSILON.items():
    OPS[_name] = _unary_with_epsilon(_fn, _eps)
