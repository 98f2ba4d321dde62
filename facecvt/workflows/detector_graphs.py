"""The MTCNN nets from `det*.npy` as TensorFlow runners of `facecvt sample mtcnn`'s frozen graphs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from facecvt.core.errors import FacecvtError


def tensorflow_detector_nets(folder: str | Path) -> dict:
    """{'pnet', 'rnet', 'onet'} -> DetectorRunner over a TensorFlowRunner of the sample graph built
    from the det1..det3.npy of `folder` (written to a temporary file, read back, removed)."""
    from facecvt.pipeline.detector_nets import NETS, DetectorRunner
    from facecvt.samples.mtcnn import write_mtcnn
    from facecvt.validate.runners.tensorflow import TensorFlowRunner

    folder = Path(folder)
    if not folder.is_dir():
        raise FacecvtError(f"MTCNN folder {folder} does not exist; pass --mtcnn with the folder that holds "
                           f"det1.npy, det2.npy and det3.npy")
    nets = {}
    with tempfile.TemporaryDirectory(prefix="facecvt-mtcnn-") as scratch:
        for net in NETS:
            path = write_mtcnn(net, Path(scratch) / f"{net}.pb", folder)
            nets[net] = DetectorRunner(net, TensorFlowRunner(path))
    return nets
