"""What a model's output holds, from its name: the one place that knows MTCNN's output names.

verify judges each output by its kind (validate/compare.py); int8 calibration feeds a detector the
kind of inputs it sees in its pipeline (convert/calibration.py).
"""

from __future__ import annotations

OUTPUT_KINDS = ("embedding", "prob", "box", "landmarks", "tensor")
# MTCNN's outputs as facenet names them (and as other ports keep them): conv4-2/conv5-2/conv6-2 are
# box offsets, conv6-3 the five landmarks, prob1 the face probability
_KIND_PATTERNS = (("prob", ("prob",)), ("box", ("conv4-2", "conv5-2", "conv6-2", "box", "bbox")),
                  ("landmarks", ("conv6-3", "landmark")))


def infer_output_kind(name: str) -> str:
    """What an output holds, from its name: 'prob', 'box', 'landmarks', 'embedding' or 'tensor'."""
    lowered = name.lower()
    for kind, needles in _KIND_PATTERNS:
        if any(needle in lowered for needle in needles):
            return kind
    return "embedding" if "embedding" in lowered else "tensor"
