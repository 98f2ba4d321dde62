"""NumPy implementations of MIL ops, registered by op type in `OPS`."""

from facecvt.validate.mil.ops import activation, conv_pool, elementwise, linear_norm, reduction, tensor  # noqa: F401
from facecvt.validate.mil.ops.registry import OPS, mil_op

__all__ = ["OPS", "mil_op"]
