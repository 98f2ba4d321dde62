"""detect -> align -> embed, written once over objects: three detector nets and one embedder runner.

    pipeline = FacePipeline(pnet, rnet, onet, embedder, PipelineConfig(alignment="similarity"))
    faces = pipeline.faces(rgb_uint8_image)   # [Face(box, score, landmarks, vector)], best score first

`pnet`/`rnet`/`onet` are `detector_nets.DetectorNet`s (`run(batch) -> [prob, box(, landmarks)]`):
facecvt runners, of the TensorFlow sample graphs or of exported artifacts; `embedder` is a facecvt runner
(`facecvt.validate.runners.load_runner`), whose `embed` takes the preprocessed NHWC batch. Every
backend therefore runs the same pyramid, NMS, calibration, alignment and preprocessing code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.images import preprocess as preprocess_batch
from facecvt.pipeline.align import align, check_alignment
from facecvt.pipeline.detect import DetectorConfig, MtcnnDetector

DEFAULT_INPUT_SIZE = 160


@dataclass
class PipelineConfig:
    """Everything that decides a pipeline's output besides the weights: recorded in a bundle manifest."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    alignment: str = "similarity"  # or "margin_crop" (facenet's own recipe)
    margin: float = 32.0  # pixels around the box, for margin_crop (facenet: 32 at 160, 44 at 182)
    preprocess: str = "fixed"  # the embedder's: (x - 127.5) / 128
    max_faces: int = 0  # keep the best N faces per image (0: all)

    def check(self) -> PipelineConfig:
        check_alignment(self.alignment)
        self.detector.check()
        if self.margin < 0:
            raise FacecvtError(f"margin {self.margin} must be >= 0 pixels")
        preprocess_batch(np.zeros((0, 1, 1, 3), np.uint8), self.preprocess)  # names the modes if unknown
        return self

    def to_dict(self) -> dict:
        return {"detector": {"name": "mtcnn", **self.detector.to_dict()}, "alignment": self.alignment,
                "margin": self.margin, "preprocess": self.preprocess, "max_faces": self.max_faces}

    @classmethod
    def from_dict(cls, record: dict) -> PipelineConfig:
        return cls(detector=DetectorConfig.from_dict(record.get("detector", {})),
                   alignment=record.get("alignment", "similarity"), margin=float(record.get("margin", 32.0)),
                   preprocess=record.get("preprocess", "fixed"),
                   max_faces=int(record.get("max_faces", 0))).check()


@dataclass
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in image pixels
    score: float
    landmarks: np.ndarray | None  # (5, 2) x, y; None for a crop embedded without detection
    vector: np.ndarray  # (D,) float32

    def to_json(self, digits: int = 2) -> dict:
        return {"box": [round(float(v), digits) for v in self.box], "score": round(float(self.score), 6),
                "landmarks": None if self.landmarks is None else
                [[round(float(x), digits), round(float(y), digits)] for x, y in self.landmarks],
                "vector": [float(v) for v in self.vector]}


class FacePipeline:
    def __init__(self, pnet, rnet, onet, embedder, config: PipelineConfig | None = None):
        self.config = (config or PipelineConfig()).check()
        self.detector = MtcnnDetector(pnet, rnet, onet, self.config.detector)
        self.embedder = embedder
        shape = tuple(getattr(embedder, "input_shape", ()) or ())
        height, width = (shape[1], shape[2]) if len(shape) == 4 else (None, None)
        if height is None or width is None:
            height = width = DEFAULT_INPUT_SIZE
        if height != width:
            raise FacecvtError(f"the embedder takes {width}x{height} images; the face pipeline aligns to a "
                               f"square input")
        self.input_size = int(height)

    def aligned(self, image: np.ndarray, detections) -> np.ndarray:
        """(N, S, S, 3) uint8 aligned crops of the detections."""
        size = self.input_size
        crops = [align(image, d.box, d.landmarks, size, self.config.alignment, self.config.margin)
                 for d in detections]
        return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)

    def embed_aligned(self, crops_uint8: np.ndarray) -> np.ndarray:
        """Vectors (N, D) of aligned uint8 crops: the embedder's preprocessing, then its runner."""
        if not len(crops_uint8):
            return np.zeros((0, 0), np.float32)
        return np.asarray(self.embedder.embed(preprocess_batch(crops_uint8, self.config.preprocess)), np.float32)

    def faces(self, image: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 image, best detection first (by the score's log-odds: ties at 1.0 too)."""
        detections = sorted(self.detector.detect(image).faces, key=lambda d: -d.logit)
        if self.config.max_faces:
            detections = detections[:self.config.max_faces]
        vectors = self.embed_aligned(self.aligned(image, detections))
        return [Face(d.box, d.score, d.landmarks, v) for d, v in zip(detections, vectors)]

    def embed_crop(self, image: np.ndarray) -> Face:
        """The whole image taken as one already aligned face crop (resized to the input size), no detection.

        For crops made by another aligner (like `../shared/faces`); box = the whole image, score 1,
        landmarks None.
        """
        import cv2

        height, width = image.shape[:2]
        crop = cv2.resize(image, (self.input_size, self.input_size), interpolation=cv2.INTER_LINEAR) \
            if (height, width) != (self.input_size, self.input_size) else image
        vector = self.embed_aligned(crop[None])[0]
        return Face(np.array([0, 0, width, height], np.float32), 1.0, None, vector)
