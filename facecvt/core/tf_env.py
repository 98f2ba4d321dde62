"""Import TensorFlow once, quietly (its C++ log lines would drown facecvt's own output)."""

from __future__ import annotations

import contextlib
import os
import sys

_tf = None


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration (Python's own stderr is kept)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tf():
    """Return the tensorflow module, imported with its logging turned down."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        with _native_stderr_silenced():  # C++ start-up lines (absl, CUDA stubs) ignore the log level
            import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        _tf = tf
    return _tf


def silence_native_output() -> None:
    """For the CLI: C++ libraries' prints go to /dev/null; Python's stdout/stderr keep the terminal.

    TensorFlow, the TFLite converter, LiteRT and OpenCV print start-up and progress lines on
    file descriptors 1 and 2 whatever their log level; facecvt's own output goes through
    `sys.stdout`/`sys.stderr`, which are moved to copies of the original descriptors.
    """
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        try:
            stream.flush()
            saved = os.dup(fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            setattr(sys, name, os.fdopen(saved, "w", buffering=1, encoding=stream.encoding or "utf-8",
                                         errors="replace"))
        except (OSError, ValueError, AttributeError):
            pass


def graph_def_class():
    """The GraphDef protobuf class (TensorFlow is imported quietly first)."""
    import_tf()
    from tensorflow.core.framework.graph_pb2 import GraphDef

    return GraphDef
