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


def export(target_name: str, frozen: FrozenGraph, out: str | Path, *, force: bool = False, record_on=None,
           **options) -> ExportResult:
    """Write `target_name`'s artifact for `frozen` to `out`; nothing is published unless it loads and runs.

    `record_on`: batches (verify's inputs) to run the loaded-back artifact on while it is open; the
    outputs come back as the result's `recording` (None if running them failed: the caller's own
    verify then meets the failure, with its usual message)."""
    target = lookup_target(target_name)
    finals = destinations(target_name, out)
    if options.get("precision") == "int8":
        from facecvt.validate import quant_report

        options.setdefault("probe", quant_report)  # the per-layer error account of the int8 writers
    started = time.perf_counter()
    with atomic_outputs(finals, force=force) as tmps:
        details = write_artifact(target_name, frozen, tmps, **options)
        runner_options = details.pop("runner_options", None) or {}
        checks, recording = load_check(target.backend, tmps[0], frozen, runner_options, record_on)
        details.update(checks)
    return ExportResult(target=target_name, backend=target.backend, path=finals[0], extra_paths=finals[1:],
                        recording=recording,
                        precision=options.get("precision", target.precisions[0]),
                        seconds=time.perf_counter() - started,
                        details={**details, "runner_options": _published(runner_options, tmps, finals)})


# A model whose height and width are free is load-checked at two sizes (P-Net needs at least 12x12).
FREE_SIZE_CHECKS = ((24, 24), (40, 32))


def load_check(backend: str, path: Path, frozen: FrozenGraph, runner_options: dict, record_on=None):
    """Open the artifact in its runtime and run a batch of 2 random inputs (1 if the batch is fixed),
    at the model's size, or at two sizes when its height and width are free; (checks, recording of
    the `record_on` batches or None).

    Every output must come back finite with the shape the graph gives it. With runner options
    (sibling files), it is opened both with and without them, and the two must agree: a mis-built
    sibling (OpenCV's text graph) shows as a difference.
    """
    batch = frozen.batch or 2
    sizes = frozen.sizes_to_run(FREE_SIZE_CHECKS) if frozen.free_size else (frozen.image_size,)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (batch, h, w, frozen.input_shape[3])).astype(np.float32) for h, w in sizes]
    with runner_class(backend)(path, **runner_options) as runner:
        results = [runner.run(x) for x in inputs]
        recording = _recorded(runner, record_on)
    for ys in results:
        _check_outputs(backend, ys, frozen, batch)
    ran = "; ".join(f"{'x'.join(map(str, x.shape[1:3]))} -> " + ", ".join(str(tuple(y.shape)) for y in ys)
                    for x, ys in zip(inputs, results))
    checks = {"load_check": f"{backend} ran batch {batch}: {ran}"}
    if not frozen.multi_output:
        y = results[0][0].reshape(batch, -1)
        norms = np.linalg.norm(y, axis=1)
        checks.update(output_l2_norms=[round(float(norms.min()), 6), round(float(norms.max()), 6)],
                      # measured on the artifact's own outputs, not assumed: unit vectors to 1e-3
                      l2_normalized=bool(np.all(np.abs(norms - 1.0) <= L2_NORM_TOLERANCE)))
    if runner_options:
        alone_options = {k: v for k, v in runner_options.items() if k == "output_names"}
        with runner_class(backend)(path, **alone_options) as alone:
            diff = max(float(np.max(np.abs(a - y), initial=0.0))
                       for x, ys in zip(inputs, results) for a, y in zip(alone.run(x), ys))
        used = ", ".join(Path(v).name for k, v in runner_options.items() if k != "output_names")
        if not diff <= SIBLING_ATOL:
            raise FacecvtError(
                f"{backend} computes {Path(path).name} with {used} differently from {Path(path).name} alone "
                f"(max |diff| {diff:.2e} > {SIBLING_ATOL}); this is a facecvt bug, please report it")
        if used:
            checks["sibling_check"] = f"{backend} agrees with and without {used} (max |diff| {diff:.1e})"
    return checks, recording


def _recorded(runner, batches):
    """The runner's outputs on `batches`, or None when there are none or running them failed."""
    if batches is None:
        return None
    from facecvt.validate.runners.replay import record

    try:
        return record(runner, batches)
    except Exception:  # noqa: BLE001 - the parent's verify runs the artifact itself and reports it
        return None


def _check_outputs(backend: str, outputs: list, frozen: FrozenGraph, batch: int) -> None:
    """Every output present, finite, batch rows first, and of the graph's shape where it is known."""
    if len(outputs) != len(frozen.output_names):
        raise FacecvtError(f"the {backend} artifact loads but returns {len(outputs)} outputs, expected "
                           f"{len(frozen.output_names)} ({', '.join(frozen.output_names)})")
    for name, y in zip(frozen.output_names, outputs):
        expected = frozen.output_shapes.get(name)
        if not frozen.multi_output and frozen.embedding_size:
            expected, y = (batch, frozen.embedding_size), y.reshape(len(y), -1)
        shape_ok = expected is None or (len(expected) == y.ndim and all(
            e is None or e == g for e, g in zip((batch, *expected[1:]), y.shape)))
        if not shape_ok or not np.all(np.isfinite(y)):
            want = "?" if expected is None else tuple(batch if i == 0 else e for i, e in enumerate(expected))
            raise FacecvtError(
                f"the {backend} artifact loads but returns {tuple(y.shape)} for {name} "
                f"(finite: {bool(np.all(np.isfinite(y)))}), expected {want}")


def _published(runner_options: dict, tmps: list, finals: list) -> dict:
    """Runner options that named temporary files, renamed to the published files."""
    renamed = {str(t): str(f) for t, f in zip(tmps, finals)}
    return {k: renamed.get(str(v), v) for k, v in runner_options.items()}
