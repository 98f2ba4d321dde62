"""MTCNN face detection (Zhang et al. 2016) over three detector nets, written once in NumPy.

Image pyramid -> P-Net proposals (NMS per scale, then across scales) -> box calibration and
square-ing -> R-Net refinement -> O-Net refinement with five landmarks -> final NMS. Thresholds apply
to the face probability; NMS and the order of the faces rank by its log-odds (`face_logit`). The nets are
any objects with `run(batch) -> [prob, box(, landmarks)]` (`detector_nets.DetectorNet`): runners of
the TensorFlow sample graphs (`samples.mtcnn`) or of exported artifacts, outputs mapped by name.

Coordinates are continuous pixel coordinates of the input image: a box (x1, y1, x2, y2) covers
x1 <= x < x2; a landmark (x, y) is a point in the same frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from facecvt.core.errors import FacecvtError

PNET_STRIDE, PNET_CELL = 2, 12
REFINE_BATCH = 128  # R-/O-Net crops per forward


@dataclass
class DetectorConfig:
    """MTCNN's parameters, recorded in a pipeline bundle's manifest."""

    min_face_size: float = 20.0
    scale_factor: float = 0.709
    thresholds: tuple = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probability
    nms_pnet_scale: float = 0.5  # IoU within one pyramid scale
    nms_pnet_all: float = 0.7  # IoU across scales
    nms_rnet: float = 0.7
    nms_onet_min: float = 0.7  # intersection over the smaller box, after O-Net
    input_mean: float = 127.5  # nets take (pixel - mean) * scale ...
    input_scale: float = 0.0078125
    input_transposed: bool = True  # ... in NWHC (x axis first), as the Caffe-trained weights want

    def check(self) -> DetectorConfig:
        if not self.min_face_size >= 12:
            raise FacecvtError(f"minimum face size {self.min_face_size} is below P-Net's 12-pixel cell; use >= 12")
        if not 0 < self.scale_factor < 1:
            raise FacecvtError(f"pyramid factor {self.scale_factor} must lie strictly between 0 and 1")
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise FacecvtError(f"thresholds {self.thresholds}: give three probabilities (P-, R-, O-Net)")
        return self

    def to_dict(self) -> dict:
        record = asdict(self)
        record["thresholds"] = list(self.thresholds)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> DetectorConfig:
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        if "thresholds" in known:
            known["thresholds"] = tuple(float(t) for t in known["thresholds"])
        return cls(**known).check()


@dataclass
class Detection:
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left and right mouth corners (image left/right)
    logit: float  # the score's log-odds (`face_logit`): what faces are ranked by


@dataclass
class Detections:
    """Detections of one image, plus how many candidates each stage kept (for reports)."""

    faces: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)


def pyramid_scales(height: int, width: int, config: DetectorConfig) -> list[float]:
    """Scales at which P-Net's 12-pixel cell sees faces from min_face_size up to the image size."""
    scale = PNET_CELL / config.min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= config.scale_factor
        side *= config.scale_factor
    return scales


def face_logit(prob: np.ndarray) -> np.ndarray:
    """Log-odds log(p_face / p_background) of a net's (..., 2) softmax output, in float64.

    What the detector ranks proposals by. A clear face's probability rounds to 1.0 in float32 (or to
    0.99999988, one step below), so many proposals of one face tie on it and which one NMS keeps would
    be decided by the last bit a runtime computes, moving the final box (measured on the released
    weights: OpenCV-DNN's box at IoU 0.92 with TensorFlow's). The background probability of the same
    softmax is small but not rounded away, so the log-odds still order those proposals; elsewhere they
    order as the probability does. Probabilities of exactly 0 count as 1e-45 (float32's smallest).
    """
    p = np.maximum(np.asarray(prob, dtype=np.float64), 1e-45)
    return np.log(p[..., 1]) - np.log(p[..., 0])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    `mode` "union": overlap = IoU; "min": intersection over the smaller box. `scores` only rank.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        if mode == "min":
            overlap = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-12)
        else:
            overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression: each edge moves by its offset times the box's width/height."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, :4] + offsets[:, :4] * np.stack([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centre (side = the longer side), as MTCNN feeds R-/O-Net."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """The image under each box (integer pixels, zero outside the image), resized to size x size."""
    height, width = image.shape[:2]
    patches = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes[:, :4]).astype(np.int64)):
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        patches[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return patches


class MtcnnDetector:
    """Runs the MTCNN cascade with three nets; `detect(image_rgb_uint8)` -> Detections."""

    def __init__(self, pnet, rnet, onet, config: DetectorConfig | None = None):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.config = (config or DetectorConfig()).check()

    def _net_input(self, batch_nhwc: np.ndarray) -> np.ndarray:
        c = self.config
        x = (batch_nhwc.astype(np.float32) - c.input_mean) * c.input_scale
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3) if c.input_transposed else x)

    def _pnet_output(self, out: np.ndarray) -> np.ndarray:
        """P-Net's (1, ., ., C) output as (H', W', C) in image orientation."""
        return out[0].transpose(1, 0, 2) if self.config.input_transposed else out[0]

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        """(K, 6) boxes, scores and log-odds proposed by P-Net over the pyramid."""
        c = self.config
        height, width = image.shape[:2]
        found = []
        for scale in pyramid_scales(height, width, c):
            hs, ws = int(np.ceil(height * scale)), int(np.ceil(width * scale))
            scaled = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
            outputs = self.pnet.run(self._net_input(scaled[None]))
            probs = self._pnet_output(outputs[0])
            prob = probs[:, :, 1]
            offsets = self._pnet_output(outputs[1])
            ys, xs = np.nonzero(prob >= c.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * PNET_STRIDE
            cells[:, 2:] += PNET_CELL
            boxes = calibrate(cells / scale, offsets[ys, xs].astype(np.float64))
            scores = prob[ys, xs].astype(np.float64)
            logits = face_logit(probs[ys, xs])
            keep = nms(boxes, logits, c.nms_pnet_scale)
            found.append(np.column_stack([boxes[keep], scores[keep], logits[keep]]))
        if not found:
            return np.zeros((0, 6))
        boxes = np.concatenate(found)
        keep = nms(boxes[:, :4], boxes[:, 5], c.nms_pnet_all)
        return boxes[keep]

    def _refine(self, net, image, boxes, size, threshold):
        """Run R- or O-Net on the squared boxes; keep those above threshold. -> (boxes, scores, logits, outputs)."""
        squared = square(boxes[:, :4])
        outputs = None
        for start in range(0, len(squared), REFINE_BATCH):
            patches = crop_patches(image, squared[start:start + REFINE_BATCH], size)
            chunk = net.run(self._net_input(patches))
            outputs = chunk if outputs is None else [np.concatenate([a, b]) for a, b in zip(outputs, chunk)]
        scores = outputs[0][:, 1].astype(np.float64)
        keep = scores >= threshold
        return squared[keep], scores[keep], face_logit(outputs[0][keep]), [o[keep] for o in outputs]

    def detect(self, image: np.ndarray) -> Detections:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FacecvtError(f"detect takes an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        c = self.config
        result = Detections()
        boxes = self._proposals(image)
        result.stages["pnet"] = len(boxes)
        if len(boxes):
            squared, scores, logits, outputs = self._refine(self.rnet, image, boxes, 24, c.thresholds[1])
            boxes = calibrate(squared, outputs[1].astype(np.float64))
            keep = nms(boxes, logits, c.nms_rnet)
            boxes = np.column_stack([boxes[keep], scores[keep]])
        result.stages["rnet"] = len(boxes)
        if len(boxes):
            squared, scores, logits, outputs = self._refine(self.onet, image, boxes, 48, c.thresholds[2])
            points = outputs[2].astype(np.float64)
            side = (squared[:, 2] - squared[:, 0])[:, None]
            landmarks = np.stack([squared[:, :1] + points[:, :5] * side,
                                  squared[:, 1:2] + points[:, 5:] * side], axis=2)
            boxes = calibrate(squared, outputs[1].astype(np.float64))
            keep = nms(boxes, logits, c.nms_onet_min, mode="min")
            result.faces = [Detection(box=boxes[i].astype(np.float32), score=float(scores[i]),
                                      landmarks=landmarks[i].astype(np.float32), logit=float(logits[i]))
                            for i in keep]
        result.stages["onet"] = len(result.faces)
        return result
