"""MIL reduce_* ops: `axes` None means every axis; `keep_dims` keeps them as size 1."""

from __future__ import annotations

import numpy as np

from facecvt.validate.mil.ops.registry import OPS, ints

_REDUCERS = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: _log_sum_exp(x, axis, keepdims),
}


def _log_sum_exp(x, axis, keepdims):
    peak = np.max(x, axis=axis, keepdims=True)
    y = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return y if keepdims else np.squeeze(y, axis=axis)


def _reduction(fn):
    def op(x, axes=None, keep_dims=False):
        axis = None if axes is None else ints(axes)
        return np.asarray(fn(x, axis=axis, keepdims=bool(keep_dims)))

    op.__doc__ = "MIL reduction over `axes` (all axes when None)."
    return op


for _name, _fn in _REDUCERS.items():
    OPS[_name] = _reduction(_fn)


def _arg_reduction(fn):
    def op(x, axis=-1, keep_dims=False, output_dtype="int32"):
        y = fn(x, axis=int(axis))
        return np.expand_dims(y, int(axis)) if keep_dims else y

    op.__doc__ = f"MIL {fn.__name__} along one axis (an int32 index)."
    return op


OPS["reduce_argmax"] = _arg_reduction(np.argmax)
OPS["reduce_argmin"] = _arg_reduction(np.argmin)
