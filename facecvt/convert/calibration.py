"""Calibration images for int8 quantisation, loaded at the model's input size."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass
class CalibrationImages:
    """A folder of face images, preprocessed as the model expects, read lazily in batches.

    `files` restricts the set to some of the folder's images (None: all of them), so a part of
    the folder can be held out to score the quantised model on images it was not calibrated on.
    """

    folder: Path
    preprocess: str = "fixed"
    size_hw: tuple | None = None
    batch_size: int = 16
    files: tuple | None = None

    def at_size(self, size_hw) -> "CalibrationImages":
        return replace(self, size_hw=tuple(size_hw))

    def paths(self) -> list:
        from facecvt.core.images import list_images

        return list(self.files) if self.files is not None else list_images(self.folder)

    def __len__(self) -> int:
        return len(self.paths())

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

    def __iter__(self):
        from facecvt.core.images import iter_image_batches

        for _, batch in iter_image_batches(self.paths(), self.size_hw, self.preprocess, self.batch_size):
            yield batch


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
