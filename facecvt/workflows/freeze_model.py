"""Load a model and run the freeze pipeline, with progress; render what each pass did."""

from __future__ import annotations

from facecvt.core.console import step
from facecvt.core.errors import FacecvtError
from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import FreezeResult, freeze


def parse_batch(text) -> int | None:
    """'dynamic' -> None, 'N' -> N (>= 1)."""
    if str(text).lower() == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise FacecvtError(f"--batch {text!r}: use 'dynamic' or a positive whole number") from None
    if value < 1:
        raise FacecvtError(f"--batch {text}: must be at least 1")
    return value


def parse_set(values) -> dict:
    """['phase_train=false', ...] -> {'phase_train': 'false'}."""
    parsed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise FacecvtError(f"--set {item!r}: write NAME=VALUE, e.g. --set phase_train=false")
        parsed[name.strip()] = value.strip()
    return parsed


def load_and_freeze(model_path, input_name=None, output_name=None, set_values=(), batch="dynamic",
                    signature=None, custom_objects=None, input_shape=None, after_load=None):
    """Load MODEL and run the freeze pipeline; returns (model, FreezeResult).

    `output_name` may list several outputs ('a,b,c'); `input_shape` is --input-shape N,H,W,C;
    `after_load(model)` is called between loading and freezing."""
    with step(f"loading {model_path}"):
        model = load_model(model_path, input_name=input_name, output_name=output_name,
                           set_values=parse_set(set_values), signature=signature, custom_objects=custom_objects,
                           input_shape=input_shape)
    if after_load is not None:
        after_load(model)
    with step("freezing"):
        result = freeze(model, batch=parse_batch(batch))
    return model, result


def freeze_table(model, result: FreezeResult):
    """A rich table: one row per pass, what it did and the node count before -> after."""
    from rich.table import Table

    table = Table(title=f"freeze {model.path}", title_justify="left", show_edge=False)
    for column in ("pass", "what it did", "nodes"):
        table.add_column(column)
    for report in result.reports:
        table.add_row(report.name, report.summary, f"{report.nodes_before} -> {report.nodes_after}")
    return table
