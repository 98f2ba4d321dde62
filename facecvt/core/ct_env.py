"""Import coremltools once, quietly."""

from __future__ import annotations

import logging

_ct = None


def import_coremltools():
    """Return the coremltools module with its import-time chatter turned down.

    coremltools imports TensorFlow when it is installed, so TensorFlow is imported first through
    facecvt (quiet C++ logs); on Linux coremltools also warns that its native runtime is missing,
    which is expected here (facecvt runs ML programs with its own reference executor).
    """
    global _ct
    if _ct is None:
        from facecvt.core.tf_env import import_tf

        import_tf()
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        import coremltools

        _ct = coremltools
    return _ct


def has_coreml_runtime() -> bool:
    """True when coremltools can run predictions here (macOS with its native extension)."""
    import_coremltools()
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
    except ImportError:
        return False
    return True
