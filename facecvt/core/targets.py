"""The one table of export targets: what each writes, which runtime runs it, what it accepts.

Exporters (`convert/`), the bundle, the CLI's option choices and `verify`'s inference of a
candidate's backend all read this table; nothing else lists targets, suffixes or precisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")  # every precision facecvt knows, loosest tolerance last


@dataclass(frozen=True)
class Target:
    name: str                 # the CLI's target name (to-NAME, --targets NAME)
    backend: str              # the runner that runs its artifacts
    suffix: str               # the artifact's suffix
    precisions: tuple         # precisions its exporter writes, the default first
    layout: str               # layout of the artifact's image input
    exporter: str             # module holding `write(frozen, tmp_path, siblings, **options)`
    siblings: tuple = ()      # suffixes of files written beside the artifact
    name_pattern: str = ""    # names the runtime accepts for inputs/outputs ("" = any TF name)
    by_default: bool = True   # exported by `facecvt export` when --targets is not given

    def legal_name(self, name: str) -> bool:
        return not self.name_pattern or re.fullmatch(self.name_pattern, name) is not None


TARGETS = {t.name: t for t in (
    Target("opencv", "opencv", ".pb", ("fp32",), "NCHW", "facecvt.convert.opencv", siblings=(".pbtxt",)),
    Target("onnx", "onnxruntime", ".onnx", ("fp32", "int8"), "NHWC", "facecvt.convert.onnx"),
    # ONNX for OpenCV's new DNN engine (cv2.dnn.readNetFromONNX), the route OpenCV keeps as it drops
    # its TensorFlow importer; after "onnx" so that a bare `.onnx` candidate stays onnxruntime's.
    Target("opencv-onnx", "opencv", ".onnx", ("fp32",), "NCHW", "facecvt.convert.opencv_onnx", by_default=False),
    Target("tflite", "litert", ".tflite", ("fp32", "fp16", "int8"), "NHWC", "facecvt.convert.tflite"),
    Target("coreml", "coreml", ".mlpackage", ("fp32", "fp16"), "NHWC", "facecvt.convert.coreml",
           name_pattern=r"[A-Za-z_][A-Za-z0-9_]*"),
)}
DEFAULT_TARGETS = tuple(name for name, t in TARGETS.items() if t.by_default)

# Backends that run an artifact but are no export target of their own.
REFERENCE_BACKEND = "tensorflow"
BACKENDS = tuple(dict.fromkeys((REFERENCE_BACKEND, *(t.backend for t in TARGETS.values()))))
BACKEND_ALIASES = {"tf": "tensorflow", "cv2": "opencv", "ort": "onnxruntime", "onnx": "onnxruntime",
                   "tflite": "litert"}
# files only TensorFlow (through Keras) runs: the loaders' inputs, never an export
TENSORFLOW_SUFFIXES = (".keras", ".h5", ".hdf5")


def _suffix_backends() -> dict:
    """suffix -> backend of a candidate, the first target with that suffix deciding: `.onnx` is
    onnxruntime's (`opencv=m.onnx` picks OpenCV). `.pb` is left to `backend_for` (reference or OpenCV)."""
    found = {}
    for t in TARGETS.values():
        if t.suffix != ".pb":
            found.setdefault(t.suffix, t.backend)
    return {**found, ".mlmodel": "coreml"}


SUFFIX_BACKEND = _suffix_backends()

# Core ML metadata keys with which an image-input export records its baked-in preprocessing.
COREML_IMAGE_SCALE = "facecvt.image_scale"
COREML_IMAGE_BIAS = "facecvt.image_bias"


def legal_names(target: Target, names) -> dict:
    """{original name: the name `target`'s runtime accepts}: the one sanitiser of tensor names.

    A legal name is kept; otherwise every character the runtime refuses becomes '_' (and a leading
    digit gets a '_' before it), with a numeric suffix when two names would collide. Exporters use
    the mapping, and the manifest records it so users can find the original names.
    """
    mapping, taken = {}, set()
    for name in names:
        legal = name
        if not target.legal_name(name):
            legal = re.sub(r"[^A-Za-z0-9_]", "_", name)
            if not re.match(r"[A-Za-z_]", legal):
                legal = "_" + legal
        base, suffix = legal, 1
        while legal in taken:
            legal, suffix = f"{base}_{suffix}", suffix + 1
        mapping[name] = legal
        taken.add(legal)
    return mapping


def target(name: str) -> Target:
    from facecvt.core.errors import FacecvtError

    if name not in TARGETS:
        raise FacecvtError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[name]


def target_of_backend(backend: str) -> Target | None:
    return next((t for t in TARGETS.values() if t.backend == backend), None)


def backend_for(path: str | Path, role: str = "candidate") -> str:
    """The backend a path implies: `.pb` is opencv as a candidate, tensorflow as the reference; Keras
    files and SavedModel folders are TensorFlow's (they are models to convert, never exports)."""
    from facecvt.core.errors import FacecvtError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUFFIX_BACKEND:
        return SUFFIX_BACKEND[suffix]
    if suffix in TENSORFLOW_SUFFIXES or (path.is_dir() and (path / "saved_model.pb").is_file()):
        return REFERENCE_BACKEND
    if suffix in (".pb", ".pbtxt") or path.is_dir():
        return REFERENCE_BACKEND if role == "reference" else "opencv"
    raise FacecvtError(
        f"cannot tell the backend of {path} from its suffix; write BACKEND=PATH "
        f"with BACKEND one of {', '.join(BACKENDS)}")
