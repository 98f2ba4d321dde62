"""Open a face pipeline from a spec: the embedder artifact, its backend, the MTCNN nets, the config.

A pipeline bundle (`facecvt export ... --detector mtcnn=DIR`) records in its manifest a `pipeline`
block: the config (`PipelineConfig.to_dict`) and, per backend and precision, the files of the
embedder and of P-, R- and O-Net (`artifacts`). A spec from such a bundle runs the detector and the
embedder on one backend's artifacts. A spec of a bare embedder (or a bundle without the block) has
no detector artifacts: its caller supplies the TensorFlow nets from `mtcnn` (det*.npy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.pipeline.face_pipeline import FacePipeline, PipelineConfig


def default_mtcnn_dir() -> Path:
    """`FACECVT_MTCNN`, else `../shared/mtcnn` beside the working copy, else beside the current folder."""
    if os.environ.get("FACECVT_MTCNN"):
        return Path(os.environ["FACECVT_MTCNN"])
    repo_shared = Path(__file__).resolve().parents[2].parent / "shared" / "mtcnn"
    return repo_shared if repo_shared.is_dir() else Path("../shared/mtcnn")


@dataclass
class PipelineSpec:
    embedder: Path
    backend: str | None = None  # None: from the embedder's suffix (.onnx, .tflite, ...; .pb -> tensorflow)
    mtcnn: Path = field(default_factory=default_mtcnn_dir)
    config: PipelineConfig = field(default_factory=PipelineConfig)
    detector: dict | None = None  # {"pnet", "rnet", "onet"} -> artifact path, run on `backend`
    detector_names: dict | None = None  # {net: {runner output name: graph name}} when an export renamed them
    precision: str | None = None

    def resolved_backend(self) -> str:
        from facecvt.core.targets import BACKEND_ALIASES, backend_for
        from facecvt.validate.runners import RUNNERS

        if self.backend:
            name = BACKEND_ALIASES.get(self.backend.lower(), self.backend.lower())
            if name not in RUNNERS:
                raise FacecvtError(f"unknown backend {self.backend!r}; use one of {', '.join(RUNNERS)}")
            return name
        return backend_for(self.embedder, role="reference")

    def to_dict(self) -> dict:
        record = {"embedder": str(self.embedder), "backend": self.resolved_backend(), "mtcnn": str(self.mtcnn),
                  **self.config.to_dict()}
        if self.detector:
            record.pop("mtcnn")
            record.update(precision=self.precision, detector_files={k: str(v) for k, v in self.detector.items()})
        return record

    @classmethod
    def from_dict(cls, record: dict, base: Path | None = None) -> PipelineSpec:
        """From a manifest's `pipeline` block; relative paths are taken from `base` (the bundle folder)."""
        def path(value):
            p = Path(value)
            return p if p.is_absolute() or base is None else base / p

        try:
            return cls(embedder=path(record["embedder"]), backend=record.get("backend"),
                       mtcnn=path(record.get("mtcnn", default_mtcnn_dir())),
                       config=PipelineConfig.from_dict(record))
        except KeyError as missing:
            raise FacecvtError(f"the pipeline record lacks {missing}; re-export the bundle") from None


def open_pipeline(spec: PipelineSpec, nets: dict | None = None) -> FacePipeline:
    """The detector nets and the embedder's runner, all on `spec`'s backend when the spec names detector
    artifacts; otherwise `nets` ({net: DetectorNet}, e.g. `workflows.detector_graphs`'s TensorFlow nets)."""
    from facecvt.pipeline.detector_nets import open_detector_nets
    from facecvt.validate.runners import load_runner

    spec.config.check()
    backend = spec.resolved_backend()
    if spec.detector:
        nets = open_detector_nets({net: (backend, path) for net, path in spec.detector.items()},
                                  spec.detector_names)
    elif nets is None:
        raise FacecvtError(f"no detector nets for {spec.embedder}: export a pipeline bundle with --detector "
                           f"mtcnn=DIR, or give the MTCNN weights")
    embedder = load_runner(backend, spec.embedder)
    pipeline = FacePipeline(nets["pnet"], nets["rnet"], nets["onet"], embedder, spec.config)
    pipeline.backend = backend
    pipeline.model = str(spec.embedder)
    pipeline.detector_backend = backend if spec.detector else "tensorflow"
    return pipeline


# which artifact of an export bundle serves when no backend is named: the fastest measured first
BACKEND_PREFERENCE = ("onnxruntime", "litert", "opencv", "tensorflow", "coreml")


def spec_from_source(source: str | Path, backend: str | None = None, mtcnn: str | Path | None = None,
                     config: PipelineConfig | None = None) -> PipelineSpec:
    """A spec from what the user named: an embedder model/artifact, or an export bundle folder.

    A bundle (a folder with manifest.json) gives the artifact of `backend` (by default the first of
    BACKEND_PREFERENCE it holds, fp32 first) and its preprocessing; a manifest `pipeline` block, once
    bundles carry the detector, gives the whole spec.
    """
    import json

    source = Path(source)
    config = config or PipelineConfig()
    if not source.exists():
        raise FacecvtError(f"{source} does not exist; name an embedder model or artifact, or an export bundle")
    manifest_path = source / "manifest.json"
    if source.is_dir() and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise FacecvtError(f"cannot read {manifest_path} ({exc}); re-export the bundle") from None
        block = manifest.get("pipeline")
        if isinstance(block, dict) and isinstance(block.get("artifacts"), list):
            return _bundle_pipeline_spec(block, source, backend)
        if isinstance(block, dict):
            spec = PipelineSpec.from_dict(manifest["pipeline"], base=source)
            spec.backend = backend or spec.backend
            if mtcnn:
                spec.mtcnn = Path(mtcnn)
            return spec
        artifact = _bundle_artifact(manifest, backend, manifest_path)
        config.preprocess = artifact.get("preprocessing", {}).get("mode", config.preprocess)
        return PipelineSpec(embedder=source / artifact["files"][0]["file"], backend=artifact["backend"],
                            mtcnn=Path(mtcnn) if mtcnn else default_mtcnn_dir(), config=config)
    return PipelineSpec(embedder=source, backend=backend, mtcnn=Path(mtcnn) if mtcnn else default_mtcnn_dir(),
                        config=config)


def _choose_entry(entries: list, backend: str | None, what: str, where) -> dict:
    """The entry (artifact or pipeline) of `backend`, else of the preferred backend the bundle holds; fp32 first."""
    from facecvt.core.targets import BACKEND_ALIASES

    held = sorted({e.get("backend") for e in entries})
    if backend:
        wanted = BACKEND_ALIASES.get(backend.lower(), backend.lower())
        chosen = [e for e in entries if e.get("backend") == wanted]
        if not chosen:
            raise FacecvtError(f"the bundle {where} has no {wanted} {what}; it holds "
                               f"{', '.join(held) or 'none'}: pass one of them to --backend")
    else:
        chosen = next(([e for e in entries if e.get("backend") == b] for b in BACKEND_PREFERENCE
                       if any(e.get("backend") == b for e in entries)), [])
        if not chosen:
            raise FacecvtError(f"{where} lists no {what} facecvt can run; re-export the bundle")
    return sorted(chosen, key=lambda e: e.get("precision") != "fp32")[0]


def _bundle_artifact(manifest: dict, backend: str | None, where: Path) -> dict:
    artifacts = [a for a in manifest.get("artifacts", []) if a.get("files")]
    return _choose_entry(artifacts, backend, "artifact", where.parent)


def _bundle_pipeline_spec(block: dict, source: Path, backend: str | None) -> PipelineSpec:
    """The spec of one backend's entry of a pipeline bundle's `pipeline.artifacts` (fp32 first)."""
    entries = [e for e in block["artifacts"] if isinstance(e, dict)]
    entry = _choose_entry(entries, backend, "pipeline", source)
    try:
        return PipelineSpec(embedder=source / entry["embedder"], backend=entry["backend"],
                            config=PipelineConfig.from_dict(block),
                            detector={net: source / entry[net] for net in ("pnet", "rnet", "onet")},
                            detector_names=entry.get("names"), precision=entry.get("precision"))
    except KeyError as missing:
        raise FacecvtError(f"the pipeline record of {source} lacks {missing}; re-export the bundle") from None
