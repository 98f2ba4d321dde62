"""Backend runners behind one interface, looked up by backend name or artifact suffix."""

from __future__ import annotations

import importlib
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.targets import BACKEND_ALIASES, backend_for
from facecvt.validate.runners.base import Runner  # noqa: F401  (re-exported)

# backend name -> "module:Class", imported on first use (each runtime is slow to import)
RUNNERS = {
    "tensorflow": "facecvt.validate.runners.tensorflow:TensorFlowRunner",
    "opencv": "facecvt.validate.runners.opencv:OpenCVRunner",
    "onnxruntime": "facecvt.validate.runners.onnxruntime:OnnxRuntimeRunner",
    "litert": "facecvt.validate.runners.litert:LiteRTRunner",
    "coreml": "facecvt.validate.runners.coreml:CoreMLRunner",
}

def parse_candidate(spec: str, role: str = "candidate") -> tuple[str, Path]:
    """'BACKEND=PATH' or 'PATH' -> (backend, path)."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        name = BACKEND_ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in RUNNERS:
            raise FacecvtError(f"unknown backend {name!r} in {spec!r}; use one of {', '.join(RUNNERS)}")
        return name, Path(path)
    return backend_for(spec, role), Path(spec)


def runner_class(backend: str):
    module_name, _, class_name = RUNNERS[backend].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_runner(backend: str, path: str | Path, **options):
    """Open `path` with the runner of `backend`."""
    path = Path(path)
    if not path.exists():
        raise FacecvtError(f"{path} does not exist")
    return runner_class(backend)(path, **options)
