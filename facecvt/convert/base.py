"""The one exporter shape: a target module's `write(frozen, tmp_path, siblings, **options) -> details`.

`write_artifact` looks the target up in the table of targets (core/targets.py), checks the
precision against it and calls the module's writer on temporary paths. Publishing (load the
artifact back, then rename into place) is the export workflow's job: workflows/export_artifact.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.targets import target as lookup_target


@dataclass
class ExportResult:
    """What an exporter wrote and what the workflow found when it loaded the artifact back."""

    target: str
    backend: str
    path: Path
    extra_paths: list = field(default_factory=list)  # files written beside `path` (e.g. OUT.pbtxt)
    precision: str = "fp32"
    seconds: float = 0.0
    details: dict = field(default_factory=dict)  # exporter-specific facts (opset, ops left, ...)
    recording: object = None  # the artifact's outputs on verify's inputs, when asked (validate/runners/replay.py)

    @property
    def paths(self) -> list:
        return [self.path, *self.extra_paths]


def write_artifact(target_name: str, frozen: FrozenGraph, tmp_paths: list, **options) -> dict:
    """Write `target_name`'s artifact to tmp_paths[0] and its sibling files to tmp_paths[1:].

    Returns the writer's details; `details["runner_options"]` (if any) says how a runner opens
    the artifact as users will (e.g. OpenCV with its .pbtxt).
    """
    target = lookup_target(target_name)
    precision = options.setdefault("precision", target.precisions[0])
    if precision not in target.precisions:
        raise FacecvtError(f"{target.name} export takes --precision {'|'.join(target.precisions)}, "
                           f"not {precision!r}")
    module = importlib.import_module(target.exporter)
    siblings = dict(zip(target.siblings, tmp_paths[1:]))
    return module.write(frozen, Path(tmp_paths[0]), siblings=siblings, **options) or {}
