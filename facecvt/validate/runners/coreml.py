"""Core ML runner: Core ML itself on macOS, facecvt's NumPy MIL executor everywhere else.

Like every runner it takes preprocessed NHWC float32 batches. Models whose program takes NCHW
(image inputs, models from other converters) get transposed inputs.

Image-input models (`to-coreml --image-input`) bake `pixels * scale + bias` into the program.
By default the runner undoes that mapping on the preprocessed batch it is given
(`pixels = (x - bias) / scale`, with scale and bias read from the model metadata facecvt
writes), so it compares with other runners on the same inputs; `raw_pixels=True` feeds the
batch to the model as 0..255 RGB pixels unchanged. Core ML itself takes 8-bit images, so on
macOS pixels are rounded to integers (exact for real images under fixed preprocessing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.ct_env import has_coreml_runtime, import_coremltools
from facecvt.core.targets import COREML_IMAGE_BIAS, COREML_IMAGE_SCALE
from facecvt.validate.runners.base import Runner

ENGINES = ("auto", "coreml", "reference")
COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
REFERENCE_CHUNK = 16  # images per executor run: bounds the executor's memory on big batches


def _input_geometry(feature) -> tuple[tuple, str, bool]:
    """(NHWC shape with None for a flexible batch, program layout 'NHWC'/'NCHW', is image)."""
    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        image = feature.type.imageType
        return (1, int(image.height), int(image.width), 3), "NCHW", True
    if kind != "multiArrayType":
        raise FacecvtError(f"Core ML input '{feature.name}' is a {kind}; facecvt needs an image or a tensor")
    array = feature.type.multiArrayType
    shape = [int(d) for d in array.shape]
    ranges = array.shapeRange.sizeRanges
    if len(shape) != 4:
        raise FacecvtError(f"Core ML input '{feature.name}' has shape {shape}; facecvt needs a 4-D image batch")
    # a flexible dimension (batch, or the height/width of a free-size model) is None
    shape = [None if index < len(ranges) and ranges[index].upperBound != ranges[index].lowerBound else size
             for index, size in enumerate(shape)]
    channels_first = shape[1] in (1, 3) and shape[3] not in (1, 3)
    if channels_first:
        return (shape[0], shape[2], shape[3], shape[1]), "NCHW", False
    return tuple(shape), "NHWC", False


def _pixel_mapping(metadata: dict, path: Path) -> tuple[float, np.ndarray]:

    if COREML_IMAGE_SCALE not in metadata or COREML_IMAGE_BIAS not in metadata:
        raise FacecvtError(f"{path} takes images but does not record its pixel scale/bias (not exported by "
                           f"facecvt); feed raw 0..255 pixels with the runner option raw_pixels=True")
    scale = float(metadata[COREML_IMAGE_SCALE])
    bias = np.array([float(b) for b in metadata[COREML_IMAGE_BIAS].split(",")], dtype=np.float32)
    return scale, bias


# Core ML runs only on macOS; elsewhere every number labelled so comes from facecvt's own executor.
MIL_EXECUTOR_LABEL = "facecvt MIL executor, not Core ML"


class CoreMLRunner(Runner):
    """Embeds with a Core ML ML program (.mlpackage).

    engine: 'auto' (Core ML when coremltools can run models here, i.e. on macOS, else the
    reference executor), 'coreml' or 'reference'. compute_units applies to Core ML only.
    """

    backend = "coreml"

    def __init__(self, path: str | Path, engine: str = "auto", compute_units: str = "all",
                 raw_pixels: bool = False):
        super().__init__(path)
        if engine not in ENGINES:
            raise FacecvtError(f"unknown Core ML engine {engine!r}; use one of {', '.join(ENGINES)}")
        if compute_units not in COMPUTE_UNITS:
            raise FacecvtError(f"unknown compute_units {compute_units!r}; use one of {', '.join(COMPUTE_UNITS)}")
        from facecvt.validate.mil.program import load_spec

        self._spec = load_spec(self.path)
        description = self._spec.description
        self._input_name = description.input[0].name
        self._output_names = [output.name for output in description.output]
        self._shape, self._layout, self._is_image = _input_geometry(description.input[0])
        self._raw_pixels = raw_pixels
        if self._is_image and not raw_pixels:
            self._scale, self._bias = _pixel_mapping(dict(description.metadata.userDefined), self.path)
        if engine == "coreml" and not has_coreml_runtime():
            raise FacecvtError("Core ML itself runs only on macOS; use engine='reference' "
                               "(facecvt's NumPy executor) here")
        self.engine = "coreml" if engine == "coreml" or (engine == "auto" and has_coreml_runtime()) else "reference"
        self.max_chunk = REFERENCE_CHUNK if self.engine == "reference" else 64
        self._model = self._executor = None
        if self.engine == "coreml":
            ct = import_coremltools()
            units = getattr(ct.ComputeUnit, compute_units.upper())
            self._model = ct.models.MLModel(str(self.path), compute_units=units)
        else:
            from facecvt.core.threads import thread_budget
            from facecvt.validate.mil import MilExecutor

            thread_budget()  # holds numpy's BLAS, which the executor's convolutions run on, to this process's share
            self._executor = MilExecutor(self.path)

    @property
    def input_shape(self) -> tuple:
        return self._shape

    def describe(self) -> str:
        return f"{self.backend}[{self.engine}]:{self.path}"

    @property
    def executed_by(self) -> str:
        return "coreml" if self.engine == "coreml" else MIL_EXECUTOR_LABEL

    def _infer(self, chunk: np.ndarray) -> list[np.ndarray]:
        if self._is_image and not self._raw_pixels:
            chunk = (chunk - self._bias) / self._scale
        if self.engine == "coreml":
            values = self._predict_coreml(chunk)
        else:
            feed = chunk.transpose(0, 3, 1, 2) if self._layout == "NCHW" else chunk
            values = self._executor.run({self._input_name: np.ascontiguousarray(feed)})
        return [np.asarray(values[name]) for name in self._output_names]

    def activations(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every MIL variable the program computes, from facecvt's executor (name -> array).

        Core ML itself (macOS) exposes only a model's declared outputs, so with engine='coreml'
        intermediates are unavailable; open the runner with engine='reference' to localise.
        """
        if self.engine == "coreml":
            raise FacecvtError("Core ML itself cannot expose intermediate tensors; localise this candidate with "
                               "the runner option engine='reference' (facecvt's MIL executor)")
        chunk = self.checked_batch(batch)
        if self._is_image and not self._raw_pixels:
            chunk = (chunk - self._bias) / self._scale
        feed = chunk.transpose(0, 3, 1, 2) if self._layout == "NCHW" else chunk
        values = self._executor.run({self._input_name: np.ascontiguousarray(feed)}, intermediates=True)
        return {name: np.asarray(value, dtype=np.float32) for name, value in values.items()
                if np.issubdtype(np.asarray(value).dtype, np.floating)}

    def _predict_coreml(self, chunk: np.ndarray) -> dict:
        """{output name: array} from Core ML itself (macOS)."""
        if self._is_image:
            from PIL import Image

            pixels = np.clip(np.rint(chunk), 0, 255).astype(np.uint8)
            predictions = [self._model.predict({self._input_name: Image.fromarray(image, "RGB")}) for image in pixels]
            return {name: np.concatenate([np.asarray(p[name])[None] if np.ndim(p[name]) == 1 else np.asarray(p[name])
                                          for p in predictions]) for name in self._output_names}
        feed = chunk.transpose(0, 3, 1, 2) if self._layout == "NCHW" else chunk
        return self._model.predict({self._input_name: np.ascontiguousarray(feed)})

    def close(self) -> None:
        self._model = self._executor = None
