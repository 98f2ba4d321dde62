"""MTCNN's three detector nets (P-, R-, O-Net) as plain facecvt runners.

The pipeline's detector nets are runners (`facecvt.validate.runners`): the TensorFlow runner of the
frozen graphs `facecvt sample mtcnn` writes (`facecvt.samples.mtcnn`, the one implementation of the
nets; `workflows.detector_graphs` opens them from `det*.npy`), or the runner of an exported artifact
of any backend. A runner returns its outputs in its `output_names` order, which an export may change
or rename; `DetectorRunner` maps them by name to what the detector reads: (prob, box[, landmarks]).

The nets take images scaled `(pixel - 127.5) * 0.0078125` and transposed (NWHC, the image's x axis
first), as facenet feeds the Caffe-trained weights (`samples.mtcnn.preprocess`); the detector does
both (`detect.DetectorConfig`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np

from facecvt.core.errors import FacecvtError

NETS = ("pnet", "rnet", "onet")
# each output's role, found in its name with everything but letters and digits dropped (so that
# `onet/conv6-2/conv6-2`, `onet_conv6_2_conv6_2:0` and Core ML's renames all match)
ROLES = {"pnet": (("prob", "prob1"), ("box", "conv42")),
         "rnet": (("prob", "prob1"), ("box", "conv52")),
         "onet": (("prob", "prob1"), ("box", "conv62"), ("landmarks", "conv63"))}


class DetectorNet(Protocol):
    """What the detector needs from a net."""

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """(prob, box[, landmarks]) of a preprocessed, transposed NHWC float32 batch."""


def _squashed(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().removesuffix(":0"))


class DetectorRunner:
    """A runner of one MTCNN net whose `run` returns (prob, box[, landmarks]) whatever its output order."""

    def __init__(self, net: str, runner, names: dict | None = None):
        """`names`: the runner's output names -> the graph's (a bundle manifest's `names`), if renamed."""
        if net not in ROLES:
            raise FacecvtError(f"unknown MTCNN net {net!r}; use pnet, rnet or onet")
        self.net, self.runner = net, runner
        outputs = list(runner.output_names)
        original = [_squashed((names or {}).get(name, name)) for name in outputs]
        self.order = []
        for role, key in ROLES[net]:
            found = [k for k, name in enumerate(original) if key in name]
            if len(found) != 1:
                raise FacecvtError(f"{runner.path} is not an MTCNN {net}: no single output named like {key!r} "
                                   f"(its {role}) among {', '.join(outputs)}")
            self.order.append(found[0])

    @property
    def path(self) -> Path:
        return self.runner.path

    @property
    def backend(self) -> str:
        return self.runner.backend

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.runner.run(batch)
        return [outputs[k] for k in self.order]

    def close(self) -> None:
        self.runner.close()


def open_detector_nets(artifacts: dict, names: dict | None = None) -> dict:
    """{net: DetectorRunner} from {net: (backend, path)}; `names`: {net: output-name map} if renamed."""
    from facecvt.validate.runners import load_runner

    missing = [net for net in NETS if net not in artifacts]
    if missing:
        raise FacecvtError(f"the detector lacks {', '.join(missing)}; re-export the bundle with --detector")
    return {net: DetectorRunner(net, load_runner(*artifacts[net]), (names or {}).get(net))
            for net in NETS}
