"""The table of MIL op implementations: op type -> NumPy function.

An implementation takes the op's inputs as keyword arguments named as in the MIL op
definition (tensors as NumPy arrays, float16 already widened to float32, strings as str,
variadic inputs such as concat's `values` as lists) and returns one array, or a tuple of
arrays for ops with several outputs. The executor rounds each result to the dtype the
program declares for that output, so implementations compute in float32 and never round.
"""

from __future__ import annotations

OPS: dict = {}


def mil_op(*op_types: str):
    """Register the decorated function as the implementation of each MIL op type given."""

    def register(fn):
        for op_type in op_types:
            if op_type in OPS:
                raise ValueError(f"MIL op {op_type!r} is registered twice")
            OPS[op_type] = fn
        return fn

    return register


def ints(values) -> tuple:
    """A MIL int list parameter (strides, axes, pads...) as a tuple of Python ints."""
    if values is None:
        return ()
    return tuple(int(v) for v in (values.reshape(-1) if hasattr(values, "reshape") else values))
