"""The `verify --html` report: one self-contained HTML file (plots as embedded PNG, no network).

Rendered from the report dict alone (what `--json` writes), so a saved JSON report can be turned
into HTML later. Per candidate: the |Δ| histogram and the per-input cosine; with pairs, the ROC of
every backend on one plot and the model-card table; with localisation, the error along depth with
the first divergence marked. Plots are drawn by matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from facecvt.core.atomic import atomic_output

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1150px; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; font-family: monospace; }
.pass { color: #176c2f; font-weight: bold; } .fail { color: #b3261e; font-weight: bold; }
img { max-width: 100%; display: block; margin: 0.4em 0 1em; }
section { border-top: 1px solid #ddd; margin-top: 1.5em; }
"""


def render_html(report: dict) -> str:
    """The whole HTML document of `report`."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>facecvt verify report</title><style>{STYLE}</style></head><body>",
             _header(report), _candidates_table(report)]
    for index, candidate in enumerate(report["candidates"]):
        parts.append(_candidate_section(index, candidate))
    if report.get("pairs"):
        parts.append(_pairs_section(report["pairs"]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html_atomic(path: str | Path, report: dict, force: bool = True) -> Path:
    """Write the HTML report to `path` atomically (a rerun replaces it unless force=False)."""
    text = render_html(report)
    with atomic_output(path, force=force) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# text


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, kind: str = "sci") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return {"cos": f"{value:.7f}", "pct": f"{100 * value:.2f}%", "fixed": f"{value:.4f}"}.get(kind, f"{value:.2e}")


def _verdict(passed: bool) -> str:
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _table(headers: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table; cells are already escaped HTML, the first `text` columns left-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="text">{c}</td>' if i < 2 else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _header(report: dict) -> str:
    ref, inputs = report["reference"], report["inputs"]
    return (f"<h1>facecvt verify {_verdict(report['pass'])}</h1>"
            f"<p>Reference: {_e(ref['backend'])} <code>{_e(ref['path'])}</code><br>"
            f"Inputs: {_e(inputs['count'])} from {_e(inputs['source'])}, preprocessing {_e(inputs['preprocess'])}</p>")


def _candidates_table(report: dict) -> str:
    rows = []
    for c in report["candidates"]:
        failed = ", ".join(c.get("failed", []))
        rows.append([_e(c["backend"]), f"<code>{_e(c['path'])}</code>", _e(c.get("precision", "")),
                     _num(c.get("max_abs")), _num(c.get("mean_abs")), _num(c.get("p99_abs")),
                     _num(c.get("min_cosine"), "cos"), _verdict(c["pass"]) + (f" ({_e(failed)})" if failed else "")])
        for row in c.get("outputs", []) if len(c.get("outputs", [])) > 1 else []:  # a detector: one row per output
            rows.append(["", f"output <code>{_e(row['name'])}</code> ({_e(row.get('kind', ''))})", "",
                         _num(row.get("max_abs")), _num(row.get("mean_abs")), _num(row.get("p99_abs")),
                         _num(row.get("min_cosine"), "cos"), _verdict(row["pass"])])
    return "<h2>Candidates</h2>" + _table(
        ["backend", "path", "precision", "max |Δ|", "mean |Δ|", "p99 |Δ|", "min cosine", "result"], rows,
        "candidates")


def _candidate_section(index: int, candidate: dict) -> str:
    title = f"{candidate['backend']} {candidate['path']}"
    parts = [f"<section><h2>{_e(title)} {_verdict(candidate['pass'])}</h2>"]
    distribution = candidate.get("distribution")
    if distribution:
        parts.append(_tag(distribution_png(candidate), "distribution", f"|Δ| histogram and per-input cosine of {title}"))
    block = candidate.get("localize")
    if block:
        parts.append(_localize_html(candidate, block, title))
    parts.append("</section>")
    return "\n".join(parts)


def _localize_html(candidate: dict, block: dict, title: str) -> str:
    if not block.get("available", True):
        return f"<h3>Localisation</h3><p>Not available: {_e(block['reason'])}</p>"
    first = block.get("first_divergence")
    if not block.get("layers"):
        return f"<h3>Localisation</h3><p>{_e(block.get('note', 'no layer matched'))}</p>"
    found = (f"first divergence at <code>{_e(first['layer'])}</code> ({_e(first['op'])})" if first
             else "no layer beyond the limit")
    text = (f"<h3>Localisation</h3><p>{block['matched']}/{block['total']} reference layers matched on "
            f"{_e(block.get('inputs', '?'))} inputs; limit max|Δ|/max|ref| ≤ {block['limit']:.0e} "
            f"({_e(block['precision'])}); {found}.</p>")
    layers = block.get("layers", [])
    if layers:
        text += _img(_depth_figure(layers, block["limit"], first), "depth", f"error along depth of {title}")
    if first:
        at = next(i for i, layer in enumerate(layers) if layer["layer"] == first["layer"])
        rows = [[f"<code>{_e(layer['layer'])}</code>", _e(layer["op"]), _num(layer["rel"]), _num(layer["max_abs"]),
                 _num(layer["cosine"], "cos")] for layer in layers[max(0, at - 3):at + 1]]
        text += _table(["layer (TensorFlow node)", "op", "max|Δ|/max|ref|", "max |Δ|", "min cosine"], rows,
                       "localize")
    outputs = block.get("outputs") or []
    if len(outputs) > 1:
        rows = [[f"<code>{_e(row['name'])}</code>", {True: "PASS", False: "FAIL"}.get(row.get("pass"), ""),
                 f"<code>{_e(row['first_divergence']['layer'])}</code>" if row.get("first_divergence") else "none",
                 _num(row["first_divergence"]["rel"]) if row.get("first_divergence") else "", str(row["matched"])]
                for row in outputs]
        text += _table(["output", "result", "first divergence it depends on", "max|Δ|/max|ref|", "layers"], rows,
                       "localize-outputs")
    return text


def _pairs_section(pairs: dict) -> str:
    rows = []
    for row in pairs["results"]:
        name = row["backend"] + (" (reference)" if row.get("role") == "reference" else "")
        rows.append([_e(name), f"<code>{_e(row.get('path', ''))}</code>", _num(row.get("accuracy"), "pct"),
                     _num(row.get("auc"), "fixed"), _num(row.get("eer"), "pct"), _num(row.get("threshold"), "fixed"),
                     _num(row.get("decision_agreement"), "pct")])
    text = (f"<section><h2>Pairs: {_e(pairs['source'])}</h2><p>{pairs['count']} pairs, {pairs['same']} same; "
            f"reference threshold {_num(pairs.get('reference_threshold'), 'fixed')}</p>")
    text += _table(["backend", "path", "accuracy", "AUC", "EER", "threshold", "agreement"], rows, "model-card")
    if any(row.get("roc") for row in pairs["results"]):
        text += _img(_roc_figure(pairs["results"]), "roc", "ROC of every backend")
    return text + "</section>"


# ---------------------------------------------------------------------------------------------
# plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> str:
    """The figure as base64 PNG (closed once drawn)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _tag(png: str, css: str, alt: str) -> str:
    return f'<img class="{css}" alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _img(figure, css: str, alt: str) -> str:
    return _tag(_png(figure), css, alt)


# Drawn distribution plots by what they show, so that one drawn early (`facecvt export` draws each
# artifact's while the workers still convert) is not drawn again when the report is written.
_DRAWN: dict = {}
_DRAWN_KEPT = 32


def distribution_png(candidate: dict) -> str:
    """The candidate's |Δ| histogram and per-input cosine plot as base64 PNG, drawn once per content."""
    distribution = candidate["distribution"]
    key = json.dumps([distribution, candidate.get("tolerances")], sort_keys=True, default=str)
    if key not in _DRAWN:
        while len(_DRAWN) >= _DRAWN_KEPT:
            _DRAWN.pop(next(iter(_DRAWN)))
        _DRAWN[key] = _png(_distribution_figure(candidate, distribution))
    return _DRAWN[key]


def _distribution_figure(candidate: dict, distribution: dict):
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    hist = distribution.get("abs_hist", {})
    if hist.get("counts"):
        left.stairs(hist["counts"], hist["edges"], fill=True, alpha=0.7)
        left.set_xscale("log")
    atol = candidate.get("tolerances", {}).get("atol")
    if atol is not None:
        left.axvline(atol, color="#b3261e", linestyle="--", label=f"atol {atol:.0e}")
        left.legend(loc="upper left")
    left.set_xlabel("|Δ| per embedding element")
    left.set_ylabel("count")
    left.set_title(f"|Δ| histogram ({hist.get('below', 0)} values < 1e-12 not shown)", fontsize=10)
    cosines = distribution.get("cosines", [])
    right.plot(range(len(cosines)), [1.0 - c if c is not None else float("nan") for c in cosines], ".", ms=4)
    right.set_yscale("symlog", linthresh=1e-9)
    minimum = candidate.get("tolerances", {}).get("min_cosine")
    if minimum is not None:
        right.axhline(1.0 - minimum, color="#b3261e", linestyle="--", label=f"limit cos {minimum}")
        right.legend(loc="upper left")
    right.set_xlabel("input")
    right.set_ylabel("1 - cosine")
    right.set_title("per-input cosine distance to the reference", fontsize=10)
    return figure


def _depth_figure(layers: list[dict], limit: float, first: dict | None):
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(11, 3.6))
    rel = [max(layer["rel"], 1e-12) if math.isfinite(layer["rel"]) else 1e3 for layer in layers]
    axis.semilogy(range(len(rel)), rel, ".-", ms=3, lw=0.8)
    axis.axhline(limit, color="#b3261e", linestyle="--", label=f"limit {limit:.0e}")
    if first is not None:
        at = next(i for i, layer in enumerate(layers) if layer["layer"] == first["layer"])
        axis.axvline(at, color="#e07b00", lw=1)
        axis.annotate("first divergence", (at, rel[at]), xytext=(6, -14), textcoords="offset points",
                      fontsize=8, color="#b3261e")
    axis.set_xlabel("matched layer (execution order)")
    axis.set_ylabel("max|Δ| / max|ref|")
    title = "error along depth" + (f": first divergence at {first['layer']}" if first is not None else "")
    axis.set_title(title, fontsize=9)
    axis.legend(loc="lower right")
    return figure


def _roc_figure(results: list[dict]):
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for index, row in enumerate(results):
        roc = row.get("roc")
        if roc:
            style = "-" if index == 0 else "--"
            axis.plot(roc["far"], roc["tar"], style, lw=1.5,
                      label=f"{row['backend']} (AUC {_num(row.get('auc'), 'fixed')})")
    axis.set_xscale("symlog", linthresh=1e-2)
    axis.set_xlim(0, 1)
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.set_title("ROC of every backend", fontsize=10)
    axis.legend(loc="lower right", fontsize=8)
    return figure
