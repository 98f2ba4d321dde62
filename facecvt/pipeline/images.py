"""Decoding uploaded or listed images for the face pipeline: RGB uint8, bad input said in one line."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecvt.core.errors import FacecvtError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo; more is refused before decoding
FORMATS = ("JPEG", "PNG")


def decode_image(data: bytes, what: str = "the upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3), upright as its EXIF orientation says. Not an image, a truncated file, another format or more than
    `max_pixels` raise FacecvtError."""
    if not data:
        raise FacecvtError(f"{what} is empty; send a JPEG or PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in FORMATS:
                    raise FacecvtError(f"{what} is {image.format or 'an unknown format'}, not JPEG or PNG; "
                                       f"convert it first")
                width, height = image.size
                if width * height > max_pixels:
                    raise FacecvtError(f"{what} is {width}x{height} pixels, over the limit of {max_pixels}; "
                                       f"downscale it")
                image.load()  # decode now: a truncated file fails here
                rgb = ImageOps.exif_transpose(image).convert("RGB")  # a phone photo's EXIF rotation applied
    except FacecvtError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise FacecvtError(f"{what} is too many pixels to decode safely; downscale it") from None
    except UnidentifiedImageError:
        raise FacecvtError(f"{what} is not an image PIL can read; send a JPEG or PNG") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FacecvtError(f"{what} cannot be decoded ({reason}); it may be truncated or corrupt") from None
    return np.asarray(rgb, dtype=np.uint8)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FacecvtError(f"image {path} does not exist; check the path")
    return decode_image(path.read_bytes(), what=f"image {path}", max_pixels=max_pixels)
