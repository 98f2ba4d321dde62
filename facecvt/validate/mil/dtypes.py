"""MIL dtype names and how the reference executor stores values of each."""

from __future__ import annotations

import numpy as np

# MIL dtype name -> the NumPy dtype a device stores it in
STORAGE = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
}


def mil_dtype_name(var) -> str:
    """'fp16', 'fp32', 'int32', 'bool', 'str'... for a coremltools MIL Var."""
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def as_stored(value, dtype_name: str):
    """`value` as the executor keeps it: rounded to the program's dtype, with fp16 (and fp64)
    widened back to float32 so NumPy computes on it fast; non-tensor values pass through."""
    if dtype_name == "str" or dtype_name not in STORAGE:
        return value
    stored = np.asarray(value).astype(STORAGE[dtype_name], copy=False)
    if stored.dtype in (np.float16, np.float64):
        stored = stored.astype(np.float32)
    return stored
