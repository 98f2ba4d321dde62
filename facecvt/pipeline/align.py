"""Face alignment: the detected face -> the embedder's square input.

Two recorded choices (`ALIGNMENTS`):
- `similarity`: the five landmarks mapped onto a template by the least-squares similarity transform
  (rotation, uniform scale, translation; Umeyama 1991), then one affine warp.
- `margin_crop`: facenet's own recipe (`align_dataset_mtcnn.py`): the box grown by `margin` pixels
  (half on each side), clipped to the image, resized to the input size; no rotation.
"""

from __future__ import annotations

import cv2
import numpy as np

from facecvt.core.errors import FacecvtError, did_you_mean

ALIGNMENTS = ("similarity", "margin_crop")

# Where the five landmarks (left eye, right eye, nose, left and right mouth corner) sit, as a
# fraction of the side of the square input. Measured, not borrowed: the mean of the landmarks O-Net
# finds on the 61 shared crops (`../shared/faces`: MTCNN box + 20 %, resized to 160 x 160, the crops
# the released FaceNet separates every pair of), made left-right symmetric. So `similarity`
# reproduces the framing of crops the model is known to embed well, with the roll taken out.
# (Per-landmark spread over the 61 crops: 0.02-0.045 of the side.)
TEMPLATE = np.array([
    [0.3210, 0.4169],
    [0.6790, 0.4169],
    [0.5000, 0.5883],
    [0.3306, 0.7139],
    [0.6694, 0.7139],
], dtype=np.float64)


def check_alignment(name: str) -> str:
    if name not in ALIGNMENTS:
        raise FacecvtError(f"unknown alignment {name!r}{did_you_mean(name, ALIGNMENTS)}; "
                           f"use one of {', '.join(ALIGNMENTS)}")
    return name


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M of the similarity x -> s R x + t minimising sum |dst - M [src; 1]|^2 (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c ** 2).sum() / n
    cov = dst_c.T @ src_c / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = (d * np.diag(sign)).sum() / var_src if var_src > 0 else 1.0
    shift = mu_dst - scale * rotation @ mu_src
    return np.hstack([scale * rotation, shift[:, None]])


def align_similarity(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    matrix = similarity_transform(landmarks, TEMPLATE * size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def align_margin_crop(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    height, width = image.shape[:2]
    x1 = int(max(np.floor(box[0] - margin / 2), 0))
    y1 = int(max(np.floor(box[1] - margin / 2), 0))
    x2 = int(min(np.ceil(box[2] + margin / 2), width))
    y2 = int(min(np.ceil(box[3] + margin / 2), height))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (size, size), interpolation=cv2.INTER_LINEAR)


def align(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, size: int, method: str = "similarity",
          margin: float = 32) -> np.ndarray:
    """The face as a size x size RGB uint8 image."""
    if method == "similarity":
        return align_similarity(image, landmarks, size)
    if method == "margin_crop":
        return align_margin_crop(image, box, size, margin)
    check_alignment(method)
    raise AssertionError(method)
