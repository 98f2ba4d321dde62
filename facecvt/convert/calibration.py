"""Calibration images for int8 quantisation, fed as the model will see them.

An embedding model sees aligned face crops at its input size: the images themselves, resized. A
face detector sees other things, and its int8 ranges must cover them (`for_model` picks the plan):

- `pyramid`, a free-size model (MTCNN's P-Net): every image at the sizes of a detector's image
  pyramid, its own size times 0.709^k down to 12 pixels (MTCNN's scale factor and P-Net's window),
  the way the pipeline runs it, instead of at one size (the folder's own, which a folder of
  mixed sizes does not even have);
- `windows`, a fixed-size stage with a box output (R-Net, O-Net): every image plus square windows
  around it at random scales and offsets, resized to the input size, as the previous stage's
  proposals are. A box offset is only as large as the window is off the face: calibrated on
  centred crops alone, an int8 box output is clipped to their small offsets (O-Net's TFLite box:
  5.8 px off on a held-out face, 1.3-1.5 px calibrated on windows);
- `crops`, anything else: the images resized to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

PLANS = ("crops", "pyramid", "windows")
PYRAMID_FACTOR = 0.709   # MTCNN's scale step between pyramid levels
PYRAMID_MIN_SIDE = 12    # the smallest level: P-Net's 12-pixel window
WINDOWS_PER_IMAGE = 4    # windows cut from each image besides the image itself
WINDOW_SCALE = (0.5, 1.0)  # a window's side, as a share of the image's shorter side
WINDOW_SHIFT = 0.2       # a window's centre moves by up to this share of its side, in x and y
WINDOW_SEED = 0          # windows are drawn from a fixed seed: the same folder calibrates the same


@dataclass
class CalibrationImages:
    """A folder of face images, preprocessed as the model expects, read lazily in batches.

    `files` restricts the set to some of the folder's images (None: all of them), so a part of
    the folder can be held out to score the quantised model on images it was not calibrated on.
    `plan` says what is cut from each image (see the module docstring).
    """

    folder: Path
    preprocess: str = "fixed"
    size_hw: tuple | None = None
    batch_size: int = 16
    files: tuple | None = None
    plan: str = "crops"

    def at_size(self, size_hw) -> "CalibrationImages":
        return replace(self, size_hw=tuple(size_hw))

    def for_model(self, frozen) -> "CalibrationImages":
        """This set with the plan for `frozen`: pyramid for a free input size, windows at the input
        size for a fixed-size model with a box output, crops at the input size otherwise."""
        from facecvt.core.output_kinds import infer_output_kind

        if frozen.free_size:
            return replace(self, size_hw=None, plan="pyramid")
        detector = any(infer_output_kind(name) == "box" for name in frozen.output_names)
        return replace(self, size_hw=tuple(frozen.image_size), plan="windows" if detector else "crops")

    def paths(self) -> list:
        from facecvt.core.images import list_images

        return list(self.files) if self.files is not None else list_images(self.folder)

    def __len__(self) -> int:
        return len(self.paths())

    def sample_count(self) -> int:
        """How many inputs the set yields (pyramid levels and windows counted), from the image headers."""
        if self.plan == "windows":
            return len(self) * (1 + WINDOWS_PER_IMAGE)
        if self.plan == "pyramid":
            from PIL import Image

            def levels(path):
                with Image.open(path) as image:
                    return len(pyramid_scales(image.height, image.width))

            return sum(levels(p) for p in self.paths())
        return len(self)

    def split(self, every: int = 4) -> tuple:
        """(calibration, held out): every `every`-th image is held out, the rest calibrate."""
        paths = self.paths()
        held = tuple(paths[every - 1::every])
        kept = tuple(p for p in paths if p not in set(held))
        return replace(self, files=kept), replace(self, files=held)

    def digest(self) -> dict:
        """{"count", "sha256", "files"} of the images (core/digests.py), recorded in int8 artifacts."""
        from facecvt.core.digests import image_set_digest

        return image_set_digest(self.paths())

    def describe(self) -> str:
        """The plan in words, for the quantisation record."""
        if self.plan == "pyramid":
            return f"pyramid: each image at its size x {PYRAMID_FACTOR}^k down to {PYRAMID_MIN_SIDE} px"
        if self.plan == "windows":
            return (f"windows: each image and {WINDOWS_PER_IMAGE} square windows of {WINDOW_SCALE[0]}-"
                    f"{WINDOW_SCALE[1]} of its side, shifted up to {WINDOW_SHIFT} of theirs, resized")
        return "crops: the images resized to the input size" if self.size_hw else "crops: the images as they are"

    def __iter__(self):
        from facecvt.core.images import iter_image_batches, load_image, preprocess

        if self.plan not in PLANS:
            raise ValueError(f"unknown calibration plan {self.plan!r}; one of {PLANS}")
        if self.plan == "crops":
            for _, batch in iter_image_batches(self.paths(), self.size_hw, self.preprocess, self.batch_size):
                yield batch
            return
        rng = np.random.default_rng(WINDOW_SEED)
        paths = self.paths()
        for start in range(0, len(paths), self.batch_size):
            images = [load_image(p) for p in paths[start:start + self.batch_size]]
            cut = pyramid_levels if self.plan == "pyramid" else lambda im: windows(im, self.size_hw, rng)
            by_size = {}
            for image in images:
                for piece in cut(image):
                    by_size.setdefault(piece.shape, []).append(piece)
            for pieces in by_size.values():
                yield preprocess(np.stack(pieces), self.preprocess)


def _resized(image: np.ndarray, size_hw) -> np.ndarray:
    from PIL import Image

    height, width = int(size_hw[0]), int(size_hw[1])
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def pyramid_scales(height: int, width: int) -> list:
    """PYRAMID_FACTOR^k for k = 0, 1, ... while the shorter side stays >= PYRAMID_MIN_SIDE (at least [1])."""
    scales, scale = [], 1.0
    while min(height, width) * scale >= PYRAMID_MIN_SIDE:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales or [1.0]


def pyramid_levels(image: np.ndarray) -> list:
    """`image` (H, W, 3 uint8) at each of its `pyramid_scales` (the image itself is the first level)."""
    height, width = image.shape[:2]
    return [_resized(image, (max(1, round(height * s)), max(1, round(width * s))))
            for s in pyramid_scales(height, width)]


def windows(image: np.ndarray, size_hw, rng) -> list:
    """`image` resized to `size_hw`, then WINDOWS_PER_IMAGE square windows of it (side a random share
    WINDOW_SCALE of the shorter side, centre shifted by up to WINDOW_SHIFT of the side; the part
    outside the image black, as a proposal at the border is padded), each resized to `size_hw`."""
    height, width = image.shape[:2]
    cut = [_resized(image, size_hw)]
    for _ in range(WINDOWS_PER_IMAGE):
        side = rng.uniform(*WINDOW_SCALE) * min(height, width)
        cx = width / 2 + rng.uniform(-WINDOW_SHIFT, WINDOW_SHIFT) * side
        cy = height / 2 + rng.uniform(-WINDOW_SHIFT, WINDOW_SHIFT) * side
        top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
        size = max(1, int(round(side)))
        window = np.zeros((size, size, 3), np.uint8)
        src = image[max(top, 0):top + size, max(left, 0):left + size]
        window[max(-top, 0):max(-top, 0) + src.shape[0], max(-left, 0):max(-left, 0) + src.shape[1]] = src
        cut.append(_resized(window, size_hw))
    return cut


def first_images(batches, count: int):
    """The first `count` images of an iterable of NHWC batches, as batches (a sample for the error account)."""

    class Sample:
        def __iter__(self):
            left = count
            for batch in batches:
                if left <= 0:
                    return
                yield batch[:left]
                left -= len(batch)

    return Sample()
