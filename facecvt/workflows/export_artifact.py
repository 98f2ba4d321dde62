"""Export one target: write to temporary paths, load the artifact back in its runtime, then rename."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facecvt.convert.base import ExportResult, write_artifact
from facecvt.core.atomic import atomic_outputs
from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.targets import target as lookup_target
from facecvt.validate.runners import runner_class

# An artifact opened with its sibling files (OpenCV's .pbtxt) and without must agree this closely.
SIBLING_ATOL = 1e-5
# An output row whose L2 norm is within this of 1 counts as L2-normalised (fp16 rounding included).
L2_NORM_TOLERANCE = 1e-3


def destinations(target_name: str, out: str | Path) -> list[Path]:
    """The artifact's path and the paths of the files written beside it."""
    out = Path(out)
    return [out] + [out.with_suffix(s) for s in lookup_target(target_name).siblings]


def export(target_name: str, frozen: FrozenGraph, out: str | Path, *, force: bool = False,
           **options) -> ExportResult:
    """Write `target_name`'s artifact for `frozen` to `out`; nothing is published unless it loads and runs."""
    target = lookup_target(target_name)
    finals = destinations(target_name, out)
    if options.get("precision") == "int8":
        from facecvt.validate import quant_report

        options.setdefault("probe", quant_report)  # the per-layer error account of the int8 writers
    started = time.perf_counter()
    with atomic_outputs(finals, force=force) as tmps:
        details = write_artifact(target_name, frozen, tmps, **options)
        runner_options = details.pop("runner_options", None) or {}
        details.update(load_check(target.backend, tmps[0], frozen, runner_options))
    return ExportResult(target=target_name, backend=target.backend, path=finals[0], extra_paths=finals[1:],
                        precision=options.get("precision", target.precisions[0]),
                        seconds=time.perf_counter() - started,
                        details={**details, "runner_options": _published(runner_options, tmps, finals)})


def load_check(backend: str, path: Path, frozen: FrozenGraph, runner_options: dict) -> dict:
    """Open the artifact in its runtime and embed a batch of 2 random inputs (1 if the batch is fixed).

    With runner options (sibling files), it is opened both with and without them, and the two must
    agree: a mis-built sibling (OpenCV's text graph) shows as a difference.
    """
    batch = frozen.batch or 2
    h, w = frozen.image_size
    x = np.random.default_rng(0).uniform(-1, 1, (batch, h, w, frozen.input_shape[3])).astype(np.float32)
    with runner_class(backend)(path, **runner_options) as runner:
        y = runner.embed(x)
    if y.shape != (batch, frozen.embedding_size) or not np.all(np.isfinite(y)):
        raise FacecvtError(
            f"the {backend} artifact loads but returns {y.shape} "
            f"(finite: {bool(np.all(np.isfinite(y)))}), expected ({batch}, {frozen.embedding_size})")
    norms = np.linalg.norm(y, axis=1)
    checks = {"load_check": f"{backend} ran batch {batch} -> {tuple(y.shape)}",
              "output_l2_norms": [round(float(norms.min()), 6), round(float(norms.max()), 6)],
              # measured on the artifact's own outputs, not assumed: unit vectors to 1e-3
              "l2_normalized": bool(np.all(np.abs(norms - 1.0) <= L2_NORM_TOLERANCE))}
    if runner_options:
        with runner_class(backend)(path) as alone:
            diff = float(np.max(np.abs(alone.embed(x) - y)))
        used = ", ".join(Path(v).name for v in runner_options.values())
        if not diff <= SIBLING_ATOL:
            raise FacecvtError(
                f"{backend} computes {Path(path).name} with {used} differently from {Path(path).name} alone "
                f"(max |diff| {diff:.2e} > {SIBLING_ATOL}); this is a facecvt bug, please report it")
        checks["sibling_check"] = f"{backend} agrees with and without {used} (max |diff| {diff:.1e})"
    return checks


def _published(runner_options: dict, tmps: list, finals: list) -> dict:
    """Runner options that named temporary files, renamed to the published files."""
    renamed = {str(t): str(f) for t, f in zip(tmps, finals)}
    return {k: renamed.get(str(v), v) for k, v in runner_options.items()}
