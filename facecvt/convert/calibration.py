"""Calibration images for int8 quantisation, loaded at the model's input size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class CalibrationImages:
    """A folder of face images, preprocessed as the model expects, read lazily in batches."""

    folder: Path
    preprocess: str = "fixed"
    size_hw: tuple | None = None
    batch_size: int = 16

    def at_size(self, size_hw) -> "CalibrationImages":
        return CalibrationImages(self.folder, self.preprocess, tuple(size_hw), self.batch_size)

    def __iter__(self):
        from facecvt.core.images import iter_image_batches, list_images

        paths = list_images(self.folder)
        for _, batch in iter_image_batches(paths, self.size_hw, self.preprocess, self.batch_size):
            yield batch
