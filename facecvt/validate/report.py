"""The `verify` report: a JSON-ready dict, written atomically, and rendered as rich tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from facecvt.core.atomic import atomic_output

CANDIDATE_MEASURES = ("max_abs", "mean_abs", "p99_abs", "min_cosine", "max_dist_change")


def candidate_entry(backend: str, path: str | Path, precision: str, comparison: dict,
                    executed_by: str | None = None) -> dict:
    """One `candidates` item: where the candidate is, what ran it, its precision, its comparator result."""
    return {"backend": backend, "path": str(path), "executed_by": executed_by or backend, "precision": precision,
            **comparison}


def build_report(reference: tuple[str, str | Path], candidates: list[dict], inputs: dict,
                 pairs: dict | None = None) -> dict:
    """The report: `pass` (all candidates pass), `reference`, `inputs`, `candidates`, optional `pairs`.

    `inputs` holds at least `source`, `count` and `preprocess`; `pairs` is the block built by
    `pairs_block`.
    """
    backend, path = reference
    report = {
        "pass": all(c["pass"] for c in candidates),
        "reference": {"backend": backend, "path": str(path)},
        "inputs": dict(inputs),
        "candidates": list(candidates),
    }
    if pairs is not None:
        report["pairs"] = pairs
    return report


def pairs_block(source: str | Path, fmt: str, labels: np.ndarray, folds, results: list[dict],
                threshold: float, embedding_output: str | None = None) -> dict:
    """The `pairs` block: what was read, which output holds the embedding, the reference threshold,
    and per backend (reference first) accuracy, auc, eer, threshold and decision_agreement."""
    return {
        "source": str(source),
        "format": fmt,
        "embedding_output": embedding_output,
        "count": int(len(labels)),
        "same": int(np.sum(labels)),
        "folds": None if folds is None else len(folds),
        "reference_threshold": threshold,
        "results": results,
    }


def _json_ready(value):
    """Plain JSON values: NumPy scalars/arrays and paths converted, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(report: dict) -> str:
    """The report as strict JSON text (no NaN/Infinity), indented."""
    return json.dumps(_json_ready(report), indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, report: dict, force: bool = True) -> Path:
    """Write the report to `path` atomically (a rerun replaces the previous report unless force=False)."""
    text = to_json(report)
    with atomic_output(path, force=force) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def _fmt(value, kind: str = "sci") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "cos":
        return f"{value:.7f}"
    if kind == "pct":
        return f"{100.0 * value:.2f}%"
    if kind == "fixed":
        return f"{value:.4f}"
    return f"{value:.2e}"


# how each limit reads in a table: key of the tolerances -> format of its value
EMBEDDING_LIMITS = (("atol", "|Δ| ≤ {:.0e}"), ("min_cosine", "cos ≥ {}"), ("max_dist_change", "Δdist ≤ {:.0e}"))
OUTPUT_LIMITS = (("rel_atol", "|Δ|/max|ref| ≤ {:.0e}"), ("min_cosine", "cos ≥ {}"), ("prob_atol", "|Δp| ≤ {}"),
                 ("prob_map_p99", "p99 |Δp| ≤ {}"), ("prob_map_max", "|Δp| ≤ {}"), ("max_pixels", "≤ {} px"))


def _limits(tolerances: dict, formats=EMBEDDING_LIMITS) -> str:
    """The limits that are set, as one line ('none' when none is)."""
    return ", ".join(text.format(tolerances[key]) for key, text in formats
                     if tolerances.get(key) is not None) or "none"


def backend_label(entry: dict) -> str:
    """The backend, and what ran it when that was not the backend's own runtime (Core ML on Linux)."""
    ran = entry.get("executed_by", entry["backend"])
    return entry["backend"] if ran == entry["backend"] else f"{entry['backend']} ({ran})"


def candidates_table(report: dict) -> Table:
    """Per-candidate measures; PASS/FAIL in colour and the failing measures in bold red."""
    inputs = report["inputs"]
    ref = report["reference"]
    table = Table(title=escape(f"{ref['backend']} reference {ref['path']} vs candidates ({inputs['count']} "
                               f"inputs from {inputs['source']}, preprocess {inputs['preprocess']})"),
                  title_justify="left")
    for name in ("backend", "path", "precision", "max |Δ|", "mean |Δ|", "p99 |Δ|", "min cosine",
                 "max Δdist²", "limits", "result"):
        table.add_column(name, justify="right" if "|" in name or name.startswith(("min", "max")) else "left")
    kinds = {"min_cosine": "cos"}
    for cand in report["candidates"]:
        failed = set(cand.get("failed", []))
        cells = [Text(_fmt(cand.get(m), kinds.get(m, "sci")), style="bold red" if m in failed else "")
                 for m in CANDIDATE_MEASURES]
        verdict = Text("PASS", style="bold green") if cand["pass"] else Text(
            "FAIL " + ", ".join(cand.get("failed", [])), style="bold red")
        table.add_row(backend_label(cand), Text(cand["path"]), cand.get("precision", ""), *cells,
                      _limits(cand.get("tolerances", {})), verdict)
    return table


OUTPUT_MEASURES = (("max_abs", "sci"), ("p99_abs", "sci"), ("rel_max_abs", "sci"), ("min_cosine", "cos"),
                   ("max_pixels", "px"))


def outputs_table(report: dict) -> Table:
    """A multi-output model: one row per candidate and output, each judged by its own limits."""
    inputs = report["inputs"]
    ref = report["reference"]
    sizes = f", sizes {', '.join('x'.join(map(str, s)) for s in inputs['sizes'])}" if inputs.get("sizes") else ""
    table = Table(title=escape(f"{ref['backend']} reference {ref['path']} vs candidates, per output "
                               f"({inputs['count']} inputs from {inputs['source']}{sizes})"), title_justify="left")
    for name in ("backend", "path", "precision", "output", "kind", "max |Δ|", "p99 |Δ|", "|Δ|/max|ref|",
                 "min cosine", "max px", "limits", "result"):
        table.add_column(name, justify="right" if "|" in name or name.startswith(("min", "max")) else "left",
                         overflow="fold" if name in ("path", "output") else "ellipsis")
    for cand in report["candidates"]:
        for row in cand.get("outputs", []):
            failed = set(row.get("failed", []))
            cells = [Text(_fmt(row.get(m), "fixed" if kind == "px" else kind), style="bold red" if m in failed else "")
                     for m, kind in OUTPUT_MEASURES]
            verdict = Text("PASS", style="bold green") if row["pass"] else Text(
                "FAIL " + ", ".join(row.get("failed", [])), style="bold red")
            table.add_row(backend_label(cand), Text(cand["path"]), cand.get("precision", ""), Text(row["name"]),
                          row.get("kind", ""), *cells, _limits(row.get("tolerances") or {}, OUTPUT_LIMITS), verdict)
    return table


def model_card_table(pairs: dict) -> Table:
    """The pairs "model card": one row per backend (reference first), verification measures as columns."""
    folds = f", {pairs['folds']}-fold accuracy" if pairs.get("folds") else ""
    output = f", embeddings from output {pairs['embedding_output']}" if pairs.get("embedding_output") else ""
    table = Table(title=escape(f"pairs {pairs['source']} ({pairs['count']} pairs, {pairs['same']} same{folds}"
                               f"{output})"), title_justify="left")
    for name in ("backend", "precision", "path", "accuracy", "AUC", "EER", "threshold", "agreement"):
        table.add_column(name, justify="left" if name in ("backend", "precision", "path") else "right")
    for row in pairs["results"]:
        agreement = row.get("decision_agreement")
        style = "bold red" if agreement is not None and agreement < 1.0 else ""
        table.add_row(backend_label(row) + (" (reference)" if row.get("role") == "reference" else ""),
                      row.get("precision", ""), Text(str(row.get("path", ""))), _fmt(row.get("accuracy"), "pct"), _fmt(row.get("auc"), "fixed"),
                      _fmt(row.get("eer"), "pct"), _fmt(row.get("threshold"), "fixed"),
                      Text(_fmt(agreement, "pct"), style=style))
    return table


LAYERS_BEFORE = 3  # matched layers shown before the first divergence


def localize_table(candidate: dict) -> Table | Text:
    """Where one candidate departs: the first divergent layer (bold red) and the matched layers before it.

    Without a divergence, the last matched layers (the error reached at the output).
    """
    block = candidate["localize"]
    name = escape(f"{candidate['backend']} {candidate['path']}")
    if not block.get("available", True):
        return Text.from_markup(f"[bold]localize[/] {name}: not available ({escape(block['reason'])})")
    first = block.get("first_divergence")
    layers = block.get("layers", [])
    if not layers:
        return Text.from_markup(f"[bold]localize[/] {name}: {escape(block.get('note', 'no layer matched'))}")
    if first is None:
        shown, found = layers[-LAYERS_BEFORE:], "no layer beyond the limit"
    else:
        at = next(i for i, layer in enumerate(layers) if layer["layer"] == first["layer"])
        shown, found = layers[max(0, at - LAYERS_BEFORE):at + 1], f"first divergence at {first['layer']}"
    table = Table(title=f"localize {name}: {block['matched']}/{block['total']} layers matched on "
                        f"{block.get('inputs', '?')} inputs, limit max|Δ|/max|ref| ≤ {block['limit']:.0e} "
                        f"({block['precision']}); {escape(found)}", title_justify="left")
    table.add_column("layer (TensorFlow node)", overflow="fold")
    table.add_column("op")
    table.add_column("candidate tensor")
    for column in ("max|Δ|/max|ref|", "max |Δ|", "min cosine"):
        table.add_column(column, justify="right")
    for layer in shown:
        style = "bold red" if first is not None and layer["layer"] == first["layer"] else ""
        table.add_row(Text(layer["layer"], style=style), layer["op"], Text(_short(layer.get("candidate", ""))),
                      Text(_fmt(layer["rel"]), style=style), _fmt(layer["max_abs"]), _fmt(layer["cosine"], "cos"))
    return table


def localize_outputs_table(candidate: dict) -> Table | None:
    """A model with several outputs: per output, its verdict and the first divergent layer it depends on
    (where that output's error appears); None for a single output or no localisation."""
    block = candidate["localize"]
    outputs = block.get("outputs") or []
    if len(outputs) < 2 or not block.get("layers"):
        return None
    table = Table(title=escape(f"localize {candidate['backend']} {candidate['path']} per output: the first layer "
                               f"beyond the limit that each output depends on"), title_justify="left")
    for column in ("output", "result", "first divergence (TensorFlow node)", "op", "max|Δ|/max|ref|", "layers"):
        table.add_column(column, justify="right" if column.startswith(("max", "layers")) else "left",
                         overflow="fold")
    for row in outputs:
        first = row.get("first_divergence")
        verdict = {True: Text("PASS", style="bold green"), False: Text("FAIL", style="bold red")}.get(row.get("pass"),
                                                                                                   Text(""))
        style = "bold red" if first is not None and row.get("pass") is False else ""
        table.add_row(Text(row["name"]), verdict, Text(first["layer"] if first else "none", style=style),
                      first["op"] if first else "", _fmt(first["rel"]) if first else "", str(row["matched"]))
    return table


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def render(report: dict, console: Console) -> None:
    """Print the candidates table, the localisation of each localised candidate, the pairs model card
    when present, and the overall verdict."""
    multi = len(report.get("outputs") or []) > 1
    console.print(outputs_table(report) if multi else candidates_table(report))
    for candidate in report["candidates"]:
        if candidate.get("localize"):
            console.print(localize_table(candidate))
            per_output = localize_outputs_table(candidate)
            if per_output is not None:
                console.print(per_output)
    if report.get("pairs"):
        console.print(model_card_table(report["pairs"]))
    verdict = "[bold green]PASS[/]: every candidate is within tolerance" if report["pass"] else \
        "[bold red]FAIL[/]: " + ", ".join(f"{backend_label(c)} {escape(c['path'])} ({', '.join(c['failed'])})"
                                          for c in report["candidates"] if not c["pass"])
    console.print(verdict)
