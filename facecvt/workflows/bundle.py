"""`facecvt export`: every deployable form of one model, verified, with a manifest a release can keep."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from facecvt import __version__
from facecvt.core.errors import FacecvtError, ToleranceError
from facecvt.core.targets import DEFAULT_TARGETS, TARGETS

ALL_TARGETS = tuple(TARGETS)
VERSIONED = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "coremltools", "opencv-python-headless",
             "ai-edge-litert", "numpy")


@dataclass
class BundleSpec:
    targets: tuple = DEFAULT_TARGETS
    precisions: dict = field(default_factory=dict)  # target -> list of precisions
    images: Path | None = None
    pairs: Path | None = None
    random: int = 16
    preprocess: str = "fixed"
    cpu: str | None = None               # ONNX int8: the CPU profile (None: this machine's)
    calibration_method: str = "minmax"   # ONNX int8
    workers: int | None = None  # converter processes at once (default: one per core)
    sizes: tuple | None = None  # (H, W) sizes to verify a free-size model at


# A free-size model (a fully convolutional detector) is verified at these sizes unless told otherwise.
DEFAULT_FREE_SIZES = ((24, 24), (48, 64))


def parse_targets(text: str) -> tuple:
    targets = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown or not targets:
        raise FacecvtError(f"--targets {text!r}: choose from {', '.join(ALL_TARGETS)} (comma-separated)")
    return targets


def parse_precisions(items) -> dict:
    """['tflite=fp32,int8', 'coreml=fp16'] -> {'tflite': ['fp32', 'int8'], 'coreml': ['fp16']}."""
    chosen = {}
    for item in items:
        target, sep, values = item.partition("=")
        target = target.strip().lower()
        if not sep or target not in TARGETS:
            raise FacecvtError(f"--precision {item!r}: write TARGET=P[,P] with TARGET one of {', '.join(TARGETS)}")
        wanted = [v.strip().lower() for v in values.split(",") if v.strip()]
        allowed = TARGETS[target].precisions
        bad = [v for v in wanted if v not in allowed]
        if bad or not wanted:
            raise FacecvtError(f"--precision {item!r}: {target} takes {', '.join(allowed)}")
        chosen[target] = wanted
    return chosen


def sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order (an .mlpackage)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def versions() -> dict:
    found = {"facecvt": __version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _artifact_name(stem: str, target: str, precision: str) -> str:
    """`stem[_precision].suffix`, tagged with the backend when an earlier target has the same suffix
    (facenet.onnx for ONNX Runtime, facenet_opencv.onnx for OpenCV)."""
    suffix = TARGETS[target].suffix
    first_with_suffix = next(t for t in TARGETS.values() if t.suffix == suffix)
    tags = ([] if first_with_suffix.name == target else [TARGETS[target].backend]) + \
        ([] if precision == "fp32" else [precision])
    return "_".join([stem, *tags]) + suffix


# Rough CPU seconds of a worker's job on the released FaceNet (convert, load back, run on the 61 verify
# faces; measured per process): the longest start first, so that no worker begins a long job while
# the others sit idle at the end.
EXPECTED_SECONDS = {"coreml": 9, "onnx": 7, "opencv-onnx": 7, "tflite": 5, "opencv": 5}


def _expected_seconds(job) -> float:
    return EXPECTED_SECONDS.get(job.target, 10) * (2 if job.precision == "int8" else 1)


def plan_jobs(stem: str, frozen, out_dir: Path, spec: BundleSpec) -> list:
    """The artifacts of the bundle, in the bundle's order (the order of the manifest and report)."""
    from facecvt.convert.calibration import CalibrationImages
    from facecvt.workflows.export_pool import Job

    jobs = []
    for target in spec.targets:
        for precision in spec.precisions.get(target, ["fp32"]):
            options = {"precision": precision}
            if precision == "int8":
                if spec.images is None:
                    raise FacecvtError(f"{target} int8 needs calibration images: pass --images DIR")
                options["calibration"] = CalibrationImages(spec.images, spec.preprocess).for_model(frozen)
                if target == "onnx":
                    options.update(cpu=spec.cpu, calibration_method=spec.calibration_method)
            jobs.append(Job(target, precision, out_dir / _artifact_name(stem, target, precision), options))
    return jobs


def verify_inputs(spec: BundleSpec, frozen):
    """The inputs a bundle's artifacts are verified on (`frozen`: the frozen graph, or the loaded model)."""
    from facecvt.validate.verify import InputSpec

    free = getattr(frozen, "free_size", False)
    return InputSpec(images=spec.images, random=None if spec.images or spec.pairs else spec.random,
                     preprocess=spec.preprocess,
                     sizes=spec.sizes or (frozen.sizes_to_run(DEFAULT_FREE_SIZES) if free else None))


def reference_in_advance(model, spec: BundleSpec):
    """Start computing the reference's outputs on the bundle's verify inputs while the model freezes
    (workflows/bundle_verify.py); None for a model whose input size is free (its verify sizes
    depend on the frozen graph): the bundle then computes them when the workers start."""
    from facecvt.workflows.bundle_verify import ReferenceInAdvance

    if spec.sizes or None in tuple(model.input_shape[1:3]):
        return None
    return ReferenceInAdvance(model, verify_inputs(spec, model), spec.pairs)


def build_bundle(model, frozen, out_dir: Path, spec: BundleSpec, progress=print, reference=None) -> dict:
    """Export every target of `spec` from one frozen graph into `out_dir`, verify, return the manifest.

    The converters run in worker processes (workflows/export_pool.py), the longest first; each
    worker also runs its artifact on the verify inputs, and this process compares the outputs with
    the reference's as each artifact arrives. `reference`: a `reference_in_advance` started earlier.
    """
    import contextlib
    from concurrent.futures import as_completed

    from facecvt.validate.html_report import distribution_png
    from facecvt.validate.runners.tensorflow import TensorFlowRunner
    from facecvt.workflows.bundle_verify import ArtifactVerifier
    from facecvt.workflows.export_pool import ExportPool, worker_count

    stem = model.path.stem if model.path.is_file() else model.path.name
    inputs = verify_inputs(spec, frozen)
    # each worker also runs its artifact on verify's inputs; this process compares (runners/replay.py)
    jobs = [replace(job, record=(inputs, spec.pairs)) for job in plan_jobs(stem, frozen, out_dir, spec)]
    workers = worker_count(len(jobs), spec.workers)
    progress(f"exporting {len(jobs)} artifacts in {workers} worker processes; each is verified as it arrives")
    started = time.perf_counter()
    results, files = {}, {}
    with ExportPool(frozen, workers, progress, folder=out_dir) as pool:
        pending = {pool.submit(job): job for job in sorted(jobs, key=_expected_seconds, reverse=True)}
        with contextlib.ExitStack() as stack:
            if reference is not None:
                verifier = ArtifactVerifier(stack.enter_context(reference.result(frozen)), inputs, spec.pairs)
                progress(f"  reference: TensorFlow ran {reference.count} verify inputs while the model froze "
                         f"({reference.seconds:.1f} s)")
            else:
                runner = stack.enter_context(TensorFlowRunner(model.path, model=model, clean=frozen))
                verifier = ArtifactVerifier(runner, inputs, spec.pairs)
                reference_started = time.perf_counter()
                count = verifier.remember_reference(tuple(frozen.input_shape[1:4]))
                progress(f"  reference: TensorFlow ran {count} verify inputs while the workers convert "
                         f"({time.perf_counter() - reference_started:.1f} s)")
            source_sha256 = sha256(model.path)  # while the first artifacts convert
            for future in as_completed(pending):
                job = pending[future]
                results[job] = pool.result(future, job)
                check_started = time.perf_counter()
                check = verifier.check(job, results[job].backend, results[job].path, job.precision,
                                       results[job].recording)
                if check.get("distribution"):
                    distribution_png(check)  # drawn now, while later artifacts convert; report.html reuses it
                files[job] = _files(results[job])  # digested now too, not all at the end
                verdict = "PASS" if check["pass"] else "FAIL " + ", ".join(check.get("failed", []))
                progress(f"  verified {job.label}: {_measures(check)}: {verdict} "
                         f"({time.perf_counter() - check_started:.1f} s)")
    report = verifier.report(jobs)
    progress(f"  {len(jobs)} artifacts written and verified on {report['inputs']['count']} inputs in "
             f"{time.perf_counter() - started:.1f} s")
    checks = {str(c["path"]): c for c in report["candidates"]}

    artifacts = []
    for job in jobs:
        target, precision, result, seconds = job.target, job.precision, results[job], results[job].seconds
        check = checks[str(result.path)]
        artifacts.append({
            "target": target, "backend": result.backend, "precision": precision, "files": files[job],
            "input": {"name": frozen.input_name, "layout": TARGETS[target].layout, "dtype": "float32",
                      "shape": _shape_in_layout(frozen.input_shape, TARGETS[target].layout)},
            "preprocessing": _preprocessing(spec.preprocess),
            **_outputs_block(frozen, target, result.details),
            "conversion_seconds": round(seconds, 2),
            "details": {k: v for k, v in result.details.items()
                        if k not in ("load_check", "runner_options", "l2_normalized", "names")},
            "verify": {k: check[k] for k in ("executed_by", "pass", "failed", "max_abs", "mean_abs", "p99_abs", "min_cosine",
                                             "max_dist_change", "tolerances", "outputs") if k in check},
        })
    manifest = {
        "facecvt": __version__,
        "created_unix": int(time.time()),
        # absolute: verify --pipeline reopens the source model from wherever it runs
        "source": {"path": str(Path(model.path).absolute()), "kind": model.kind, "sha256": source_sha256},
        "versions": versions(),
        "inputs": report["inputs"],
        "outputs": report["outputs"],
        "pass": report["pass"],
        "artifacts": artifacts,
    }
    if report.get("pairs"):
        manifest["pairs"] = report["pairs"]
        manifest["distance_threshold"] = report["pairs"].get("reference_threshold")
    return manifest, report


def _files(result) -> list:
    """The manifest's `files` of one artifact: name, sha256, size of each file it wrote."""
    return [{"file": p.name, "sha256": sha256(p), "size_bytes": size_of(p)} for p in result.paths]


def _measures(check: dict) -> str:
    """The headline measures of one verified artifact, for the progress line."""
    if check.get("max_abs") is not None:
        return f"max |Δ| {check['max_abs']:.1e}, min cosine {check['min_cosine']:.6f}"
    return ", ".join(f"{row['name']} max |Δ| {row['max_abs']:.1e}" for row in check.get("outputs", []))


def _outputs_block(frozen, target: str, details: dict) -> dict:
    """The artifact's outputs: `output` (the embedding's name and size, single-output models),
    `outputs` (every output: its name in the export, the graph's name, shape, dtype) and `names`
    (export-side name -> the graph's name, for every input and output; Core ML renames them)."""
    names = details.get("names") or {n: n for n in (frozen.input_name, *frozen.output_names)}
    exported = {original: name for name, original in names.items()}
    block = {"outputs": [{"name": exported.get(name, name), "original_name": name, "dtype": "float32",
                          "shape": list(frozen.output_shapes[name]) if frozen.output_shapes.get(name) else None}
                         for name in frozen.output_names],
             "names": names}
    if not frozen.multi_output:
        block["output"] = {"name": frozen.output_name, "embedding_size": frozen.embedding_size,
                           "l2_normalized": details.get("l2_normalized")}
    return block


def _shape_in_layout(shape_nhwc, layout: str) -> list:
    n, h, w, c = shape_nhwc
    return [n, c, h, w] if layout == "NCHW" else [n, h, w, c]


def _preprocessing(mode: str) -> dict:
    described = {
        "fixed": {"formula": "(pixel - 127.5) / 128", "color": "RGB", "mean": 127.5, "scale": 1 / 128},
        "prewhiten": {"formula": "(x - mean(x)) / max(std(x), 1/sqrt(x.size)) per image", "color": "RGB"},
        "none": {"formula": "float32 pixels as given", "color": "RGB"},
    }
    return {"mode": mode, **described[mode]}


def write_bundle(model, frozen, out_dir: Path, spec: BundleSpec, *, force: bool = False, progress=print,
                 extend=None, reference=None) -> dict:
    """Build the bundle in a temporary folder beside `out_dir`; move it into place only if it verifies.

    `extend(manifest, folder, progress) -> [failed artifact labels]`, called once the model's artifacts
    pass, adds more to the bundle (a pipeline bundle's detector nets: workflows/pipeline_bundle.py)."""
    from facecvt.core.atomic import atomic_output
    from facecvt.workflows.bundle_readme import bundle_readme
    from facecvt.validate.html_report import write_html_atomic
    from facecvt.workflows.export_pool import sigterm_as_interrupt
    from facecvt.validate.report import write_json_atomic

    with sigterm_as_interrupt(), atomic_output(out_dir, force) as tmp:
        tmp.mkdir()
        manifest, report = build_bundle(model, frozen, tmp, spec, progress, reference)
        failed = [f"{a['target']} {a['precision']} ({', '.join(a['verify'].get('failed', []))})"
                  for a in manifest["artifacts"] if not a["verify"]["pass"]]
        if extend is not None and manifest["pass"]:
            failed += extend(manifest, tmp, progress)
            manifest["pass"] = not failed
        if not manifest["pass"]:
            error = ToleranceError("export failed verification: " + "; ".join(failed) + "; nothing was written")
            error.report = report
            raise error
        write_json_atomic(tmp / "manifest.json", manifest)
        (tmp / "README.md").write_text(bundle_readme(manifest))
        report = _moved(report, tmp, out_dir)
        write_html_atomic(tmp / "report.html", report)
    return manifest, report


def _moved(report: dict, tmp: Path, final: Path) -> dict:
    """The report with the temporary bundle folder's paths replaced by the final ones."""
    return json.loads(json.dumps(report, default=str).replace(str(tmp), str(final)))


def load_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())
