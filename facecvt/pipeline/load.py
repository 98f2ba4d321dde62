"""Open a face pipeline from a spec: the embedder artifact, its backend, the MTCNN nets, the config.

A spec is what a pipeline bundle's manifest will record (`PipelineSpec.to_dict`); until bundles carry
the detector, the CLI builds it from `--embedder`, `--backend` and `--mtcnn`.
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
        return {"embedder": str(self.embedder), "backend": self.resolved_backend(), "mtcnn": str(self.mtcnn),
                **self.config.to_dict()}

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


def open_pipeline(spec: PipelineSpec) -> FacePipeline:
    """The detector nets (TensorFlow, from the det*.npy of `spec.mtcnn`) and the embedder's runner."""
    from facecvt.pipeline.mtcnn_nets import load_tensorflow_nets
    from facecvt.validate.runners import load_runner

    spec.config.check()
    backend = spec.resolved_backend()
    nets = load_tensorflow_nets(spec.mtcnn)
    embedder = load_runner(backend, spec.embedder)
    pipeline = FacePipeline(nets["pnet"], nets["rnet"], nets["onet"], embedder, spec.config)
    pipeline.backend = backend
    pipeline.model = str(spec.embedder)
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
        if isinstance(manifest.get("pipeline"), dict):
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


def _bundle_artifact(manifest: dict, backend: str | None, where: Path) -> dict:
    from facecvt.core.targets import BACKEND_ALIASES

    artifacts = [a for a in manifest.get("artifacts", []) if a.get("files")]
    held = sorted({a.get("backend") for a in artifacts})
    if backend:
        wanted = BACKEND_ALIASES.get(backend.lower(), backend.lower())
        chosen = [a for a in artifacts if a.get("backend") == wanted]
        if not chosen:
            raise FacecvtError(f"the bundle {where.parent} has no {wanted} artifact; it holds "
                               f"{', '.join(held) or 'none'}: pass one of them to --backend")
    else:
        chosen = next(([a for a in artifacts if a.get("backend") == b] for b in BACKEND_PREFERENCE
                       if any(a.get("backend") == b for a in artifacts)), [])
        if not chosen:
            raise FacecvtError(f"{where} lists no artifact facecvt can run; re-export the bundle")
    return sorted(chosen, key=lambda a: a.get("precision") != "fp32")[0]
