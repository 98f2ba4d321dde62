"""Import TensorFlow once, quietly (its C++ log lines would drown facecvt's own output)."""

from __future__ import annotations

import os

_tf = None


def import_tf():
    """Return the tensorflow module, imported with its logging turned down."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        _tf = tf
    return _tf


def graph_def_class():
    """The GraphDef protobuf class, without importing all of TensorFlow's Python API."""
    from tensorflow.core.framework.graph_pb2 import GraphDef

    return GraphDef
