"""Keep tf2onnx's memory at a few copies of the model instead of one copy per optimizer pass.

Measured on the released FaceNet (92 MB of weights): tf2onnx 1.17 peaked at 5.2 GB. Two causes:

- After every optimizer pass, `Node.update_proto` clears a node's attributes and adds them again.
  With the upb protobuf runtime a message's memory lives in an arena that only grows until the
  message is freed, so each pass leaves one more copy of every weight tensor behind (+150-190 MB a
  pass, 24 passes). Here each update starts from a fresh NodeProto, so the stale one is freed.
- Unless `TF2ONNX_CATCH_ERRORS` is set, every pass first deep-copies the whole graph so that a pass
  that raises can be skipped. Here the passes run without the copy; if one raises, the conversion
  is simply run again the old way (`convert_bounded` below), so a model that needed the skip still
  converts.
"""

from __future__ import annotations

import contextlib
import os

# tf2onnx reads the variable's presence, not its value (it compares the name with "TRUE"): set, the
# optimizer passes run without the deep copy and without catching their errors.
CATCH_ERRORS_VARIABLE = "TF2ONNX_CATCH_ERRORS"


@contextlib.contextmanager
def fresh_node_protos():
    """Within the block, tf2onnx rebuilds a node's proto from scratch on every update."""
    from tf2onnx.graph import Node

    original = Node.update_proto

    def update_proto(node, external_tensor_storage=None):
        stale = node._op  # noqa: SLF001 - the proto the stale attribute copies live in
        fresh = type(stale)()
        for field in ("name", "op_type", "domain", "doc_string"):
            if stale.HasField(field):  # onnx is proto2: an unset field must stay unset
                setattr(fresh, field, getattr(stale, field))
        node._op = fresh  # noqa: SLF001
        original(node, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


@contextlib.contextmanager
def uncaught_optimizer_errors():
    """Within the block, tf2onnx's optimizer passes neither deep-copy the graph nor catch errors."""
    previous = os.environ.get(CATCH_ERRORS_VARIABLE)
    os.environ[CATCH_ERRORS_VARIABLE] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[CATCH_ERRORS_VARIABLE]
        else:
            os.environ[CATCH_ERRORS_VARIABLE] = previous


def convert_bounded(convert):
    """`convert()` (a tf2onnx conversion) with bounded memory; the old way if a pass raises without the copy."""
    with fresh_node_protos():
        try:
            with uncaught_optimizer_errors():
                return convert()
        except Exception:  # noqa: BLE001 - a pass that tf2onnx would have skipped: convert again, skipping it
            if CATCH_ERRORS_VARIABLE in os.environ:  # the user chose tf2onnx's behaviour: theirs stands
                raise
            return convert()
