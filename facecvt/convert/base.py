"""The one exporter shape: write to a temporary path, load it back in its runtime, then rename."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecvt.atomic import atomic_output
from facecvt.convert import TARGETS
from facecvt.errors import FacecvtError
from facecvt.frozen import FrozenGraph


@dataclass
class ExportResult:
    """What an exporter wrote and what it found when it loaded the artifact back."""

    target: str
    backend: str
    path: Path
    extra_paths: list = field(default_factory=list)  # files written beside `path` (e.g. OUT.pbtxt)
    precision: str = "fp32"
    seconds: float = 0.0
    details: dict = field(default_factory=dict)  # exporter-specific facts (opset, ops left, ...)

    @property
    def paths(self) -> list:
        return [self.path, *self.extra_paths]


def target_module(target: str):
    if target not in TARGETS:
        raise FacecvtError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[target])


def load_check(backend: str, path: Path, frozen: FrozenGraph, runner_options: dict | None = None) -> dict:
    """Open the artifact in its runtime and embed a batch of 2 random inputs (1 if the batch is fixed)."""
    from facecvt.validate.runners import runner_class

    batch = frozen.batch or 2
    h, w = frozen.image_size
    channels = frozen.input_shape[3]
    x = np.random.default_rng(0).uniform(-1, 1, (batch, h, w, channels)).astype(np.float32)
    with runner_class(backend)(path, **(runner_options or {})) as runner:
        y = runner.embed(x)
    if y.shape != (batch, frozen.embedding_size) or not np.all(np.isfinite(y)):
        raise FacecvtError(
            f"the {backend} artifact loads but returns {y.shape} "
            f"(finite: {bool(np.all(np.isfinite(y)))}), expected ({batch}, {frozen.embedding_size})")
    return {"load_check": f"{backend} ran batch {batch} -> {tuple(y.shape)}"}


def export(target: str, frozen: FrozenGraph, out: str | Path, *, force: bool = False, **options) -> ExportResult:
    """Run `target`'s writer into a temporary path, load-check it, and move it to `out`.

    A writer returns a dict of details; it may list sibling files to publish under
    `details["siblings"]` as {suffix: tmp_path} (moved to `out.with_suffix(suffix)`).
    """
    module = target_module(target)
    out = Path(out)
    started = time.perf_counter()
    sibling_suffixes = getattr(module, "SIBLING_SUFFIXES", ())
    finals = [out] + [out.with_suffix(s) for s in sibling_suffixes]
    from facecvt.atomic import atomic_outputs

    with atomic_outputs(finals, force=force) as tmps:
        details = module.write(frozen, tmps[0], siblings=dict(zip(sibling_suffixes, tmps[1:])), **options) or {}
        details.update(load_check(module.BACKEND, tmps[0], frozen, details.pop("runner_options", None)))
    return ExportResult(target=target, backend=module.BACKEND, path=out, extra_paths=finals[1:],
                        precision=options.get("precision", "fp32"),
                        seconds=time.perf_counter() - started, details=details)
