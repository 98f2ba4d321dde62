"""`facecvt export MODEL -o DIR --detector mtcnn=PATH`: the MTCNN nets exported beside the embedder.

P-, R- and O-Net are built from PATH's det1..det3.npy as `facecvt sample mtcnn` builds them (the one
implementation of the nets, `samples.mtcnn`), frozen, exported to the embedder's targets and
precisions (int8 left out: P-Net's int8 export fails verification, its face probability off by more
than the prob tolerance), and verified per output like any export (P-Net, free-size, at several
sizes). The manifest gets `detector` (each net's artifacts and verify results, as `artifacts` holds
the embedder's) and `pipeline`: the detector's thresholds and pyramid, the alignment, the embedder's
preprocessing, and per backend and precision the files of the embedder and of the three nets, which
`pipeline.load` reads to run detection and embedding on one backend.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from facecvt.core.errors import FacecvtError

DETECTORS = ("mtcnn",)
NETS = ("pnet", "rnet", "onet")
PNET_SIZES = ((12, 12), (24, 24), (48, 64))  # (H, W): P-Net's smallest input, a square, wider than tall


def parse_detector(text: str | None) -> Path | None:
    """'mtcnn=PATH' -> PATH (a folder with det1.npy..det3.npy)."""
    if text is None:
        return None
    kind, sep, path = text.partition("=")
    if not sep or kind.strip().lower() not in DETECTORS or not path:
        raise FacecvtError(f"--detector {text!r}: write mtcnn=DIR, DIR holding det1.npy, det2.npy and det3.npy")
    folder = Path(path)
    missing = [n for n in ("det1.npy", "det2.npy", "det3.npy") if not (folder / n).is_file()]
    if missing:
        raise FacecvtError(f"--detector {text!r}: {folder} lacks {', '.join(missing)}")
    return folder


def detector_spec(spec):
    """The nets' BundleSpec: the embedder's targets and precisions without int8, random inputs."""
    from facecvt.workflows.bundle import BundleSpec

    precisions = {}
    for target in spec.targets:
        kept = [p for p in spec.precisions.get(target, ["fp32"]) if p != "int8"]
        precisions[target] = kept or ["fp32"]
    return BundleSpec(targets=spec.targets, precisions=precisions, random=spec.random, preprocess="fixed",
                      workers=spec.workers)


def build_detector(folder: Path, out_dir: Path, spec, progress=print) -> dict:
    """Export and verify the three nets into `out_dir`; {net: that net's manifest}."""
    from facecvt.core.model import load_model
    from facecvt.graph_ops.pipeline import freeze
    from facecvt.samples.mtcnn import write_mtcnn
    from facecvt.workflows.bundle import build_bundle

    net_spec = detector_spec(spec)
    manifests = {}
    with tempfile.TemporaryDirectory(prefix="facecvt-mtcnn-") as scratch:
        for net in NETS:
            progress(f"detector: {net}")
            model = load_model(write_mtcnn(net, Path(scratch) / f"{net}.pb", folder))
            frozen = freeze(model).frozen
            this_spec = replace(net_spec, sizes=PNET_SIZES) if frozen.free_size else net_spec
            manifest, _ = build_bundle(model, frozen, out_dir, this_spec, progress)
            manifests[net] = manifest
    return manifests


def pipeline_block(manifest: dict, nets: dict, folder: Path, alignment: str, preprocess: str) -> dict:
    """The manifest's `pipeline` block (see the module docstring)."""
    from facecvt.pipeline.face_pipeline import PipelineConfig
    from facecvt.workflows.bundle import _preprocessing, sha256

    config = PipelineConfig(alignment=alignment, preprocess=preprocess).check()
    entries = []
    for artifact in manifest["artifacts"]:
        entry = {"target": artifact["target"], "backend": artifact["backend"], "precision": artifact["precision"],
                 "embedder": artifact["files"][0]["file"], "names": {}}
        for net in NETS:
            match = [a for a in nets[net]["artifacts"]
                     if a["target"] == artifact["target"] and a["precision"] == artifact["precision"]]
            if not match:
                break
            entry[net] = match[0]["files"][0]["file"]
            entry["names"][net] = match[0].get("names", {})
        else:
            entries.append(entry)
    return {**config.to_dict(), "embedder_preprocessing": _preprocessing(preprocess),
            # absolute: verify --pipeline reopens the weights from wherever it runs
            "detector_source": {"kind": "mtcnn", "weights": str(Path(folder).absolute()),
                                "sha256": {n: sha256(folder / n) for n in ("det1.npy", "det2.npy", "det3.npy")}},
            "artifacts": entries}


def detector_record(nets: dict) -> dict:
    """The manifest's `detector`: each net's artifacts (files, outputs, verify) and pass."""
    return {net: {"artifacts": m["artifacts"], "inputs": m["inputs"], "outputs": m["outputs"], "pass": m["pass"]}
            for net, m in nets.items()}


def pipeline_extension(folder: Path, spec, alignment: str = "similarity"):
    """`write_bundle`'s `extend`: the nets exported and verified, `detector` and `pipeline` in the manifest."""
    def extend(manifest: dict, out_dir: Path, progress=print) -> list:
        nets = build_detector(folder, out_dir, spec, progress)
        manifest["detector"] = detector_record(nets)
        manifest["pipeline"] = pipeline_block(manifest, nets, folder, alignment, spec.preprocess)
        return [f"{net} {a['target']} {a['precision']} ({', '.join(a['verify'].get('failed', []))})"
                for net, m in nets.items() for a in m["artifacts"] if not a["verify"]["pass"]]

    return extend
