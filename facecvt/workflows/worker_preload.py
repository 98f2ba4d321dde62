"""Imported once by the export pool's forkserver, so that the workers forked from it start with
TensorFlow and the pure-Python converters already imported (nothing here runs a graph or starts a
thread pool: see workflows/export_pool.py)."""

from facecvt.core.tf_env import import_tf

import_tf()

import coremltools  # noqa: E402,F401  (after TensorFlow, quietly imported above)
import tf2onnx  # noqa: E402,F401
