"""Graph passes by name, after coremltools' MIL pass registry and ONNX GraphSurgeon.

A pass is a function `(graph_def, ctx) -> str` that rewrites `graph_def` in place and
returns one line saying what it did ("folded 132 batch norms"). Its docstring shows the
pattern it rewrites. A pipeline is just a list of pass names. No pass calls another: the
dead nodes a rewrite leaves are removed by `strip_unused`, and order restored by
`sort_topologically`, where a pipeline lists them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PASS_MODULES = ("cleanup", "fold", "training", "opencv_passes", "opencv_fusions")


class _Registry(dict):
    """name -> pass; a name not registered yet imports every pass module first."""

    def __missing__(self, name: str):
        import importlib

        for module in PASS_MODULES:
            importlib.import_module(f"facecvt.graph_ops.{module}")
        if name not in self:
            raise KeyError(f"no graph pass named {name!r}; known: {', '.join(sorted(self))}")
        return self[name]


PASSES: dict = _Registry()


def graph_pass(func):
    """Register `func` under its own name."""
    PASSES[func.__name__] = func
    return func


@dataclass
class PassContext:
    """What passes need to know about the model they rewrite."""

    input_name: str = "input"
    output_names: list = field(default_factory=lambda: ["embeddings"])
    # placeholder name -> value it takes in inference (phase_train -> False)
    training_flags: dict = field(default_factory=dict)
    # NHWC input shape to give the new input Placeholder; batch None for dynamic
    input_shape: tuple | None = None
    # batch size the original graph had baked in (1 for the classic recipe), if any
    original_batch: int | None = None


@dataclass
class PassReport:
    name: str
    summary: str
    nodes_before: int
    nodes_after: int
    seconds: float

    def as_dict(self) -> dict:
        return {"pass": self.name, "summary": self.summary, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "seconds": round(self.seconds, 3)}


def run_pipeline(graph_def, ctx: PassContext, pass_names, progress=None) -> list:
    """Run the named passes in order on `graph_def` (in place); returns one PassReport per pass."""
    reports = []
    for name in pass_names:
        func = PASSES[name]
        before = len(graph_def.node)
        started = time.perf_counter()
        summary = func(graph_def, ctx) or ""
        report = PassReport(name, summary, before, len(graph_def.node), time.perf_counter() - started)
        reports.append(report)
        if progress:
            progress(report)
    return reports
