"""Where an export departs from the original: compare every intermediate tensor a candidate runtime
exposes with the clean TensorFlow graph's node of the same name, in execution order.

Each runner exposes its intermediates its own way (`Runner.activations`); this module matches
them to reference nodes, once for every backend:
- by name: a runtime's tensor names are the TensorFlow node names the exporter kept, possibly
  joined by ';' (LiteRT names a fused op after every node it absorbed), with an output index
  (':0'), a converter's suffix ('__12': tf2onnx names the nodes it adds after the one they
  replace; '_cast_fp16': coremltools in an fp16 program) or '/' spelled '_' (Core ML's MIL
  variables);
- by shape, in NHWC or NCHW (a 4-D candidate tensor is also tried transposed);
- across fusion: a tensor named after node X may hold the output of X's elementwise successors
  (OpenCV names a conv layer after its Conv2D but folds the BiasAdd into it; ONNX names a conv
  with its bias after the BiasAdd). Each candidate tensor is therefore compared with every node
  its name can stand for, and kept as the one it agrees with best; when several tensors stand
  for one node, the best agreement is kept. A real fault disagrees with every reading.

The error of a layer is `rel = max|Δ| / max|ref|` of that tensor: scale-free, so one limit per
precision holds at every depth. The first layer in execution order whose `rel` exceeds the
candidate precision's limit is the first divergence. A model with several outputs also gets it per
output: the first diverging layer among those the output depends on (an error in one head shows
under that head's output only; one in the shared trunk under every output).
"""

from __future__ import annotations

import re

import numpy as np

from facecvt.core.graph_names import ancestors
from facecvt.validate.compare import cosine_similarity

# rel = max|Δ| / max|ref| a layer may reach before it counts as diverged, by the candidate's precision.
# Measured on clean exports of the released FaceNet (4 faces, every matched layer), the largest rel was
# fp32: 1.1e-6 onnxruntime, 2.8e-6 LiteRT, 9.4e-6 OpenCV, 1.3e-6 Core ML (MIL executor);
# fp16: 3.8e-3 LiteRT, 4.0e-3 Core ML; int8 (LiteRT full-integer, calibrated on 20 other faces): 0.26
# (median 0.047). One mid-network conv scaled by 3 % gives rel 0.043..0.071 at that conv, BGR input
# 0.6 at the first. fp32 and fp16 limits sit 5x or more above the clean maxima and below the 3 % fault;
# int8 noise is as large as such a fault, so its limit only catches gross errors (a wrong scale).
RELATIVE_LIMITS = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.5}

# elementwise ops a runtime may fold into the op before them (bias, activation, scale)
FUSABLE = frozenset({"BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "Relu", "Relu6",
                     "Elu", "Selu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus"})
CONSTANT_OPS = frozenset({"Const", "Identity"})
MAX_FUSED = 3  # successors a fused op can hold: bias, scale, activation

# what runtimes append to a node's name: an output index, tf2onnx's "__12" on the nodes it adds,
# coremltools' "_cast_fp16" on the ops of an fp16 program
_SUFFIX = re.compile(r"(:\d+|__\d+|_cast_fp16|_cast_fp32)$")


def localize(reference, candidate, batch: np.ndarray, precision: str = "fp32") -> dict:
    """Compare `candidate`'s intermediate tensors on `batch` with the `reference` TensorFlowRunner's.

    Returns the JSON-ready `localize` block: `matched` and `total` reference layers,
    `first_divergence` ({layer, op, max_abs, cosine, rel, candidate} or None), the `limit` used,
    `layers` (every matched layer in execution order) and `outputs` (per output of the clean graph:
    {name, matched, first_divergence}, see `per_output`).
    """
    batch = _fit_batch(candidate, np.asarray(batch, dtype=np.float32))
    count = len(batch) if candidate.input_shape[0] is None else min(len(batch), candidate.input_shape[0])
    exposed = candidate.activations(batch)
    layers = reference.layers()
    matcher = _Matcher(reference.clean_graph.graph_def, layers)
    readings = {name: matcher.readings(name) for name in exposed}
    needed = sorted({node for nodes in readings.values() for node in nodes}, key=matcher.order.get)
    ref_values = reference.activations(batch, needed) if needed else {}

    best: dict[str, dict] = {}
    for name, value in exposed.items():
        scored = [(node, score) for node in readings[name]
                  if (score := _compare(ref_values[node][:count], np.asarray(value)[:count])) is not None]
        if not scored:
            continue
        node, score = min(scored, key=lambda item: item[1]["rel"])
        if node not in best or score["rel"] < best[node]["rel"]:
            best[node] = {"layer": node, "op": matcher.ops[node], **score, "candidate": name}
    matched = sorted(best.values(), key=lambda entry: matcher.order[entry["layer"]])
    limit = RELATIVE_LIMITS.get(precision, RELATIVE_LIMITS["fp32"])
    first = next((entry for entry in matched if not entry["rel"] <= limit), None)
    block = {"matched": len(matched), "total": len(layers), "precision": precision, "limit": limit,
             "inputs": count, "first_divergence": first, "layers": matched}
    block["outputs"] = per_output(matched, limit, reference.clean_graph.graph_def,
                                  reference.clean_graph.output_names)
    if not matched:  # a null first_divergence must not read as "no divergence"
        block["note"] = (f"none of the {len(exposed)} tensors {candidate.backend} exposes matches a reference "
                         f"layer by name and shape: the artifact was not exported from this graph by facecvt")
    return block


def per_output(layers: list[dict], limit: float, graph_def, outputs) -> list[dict]:
    """For each output: how many of the matched `layers` it depends on, and the first of them (in
    execution order) whose rel exceeds `limit`, i.e. where that output's error appears."""
    rows = []
    for name in outputs:
        upstream = ancestors(graph_def, [name], control=False)
        own = [layer for layer in layers if layer["layer"] in upstream]
        first = next((layer for layer in own if not layer["rel"] <= limit), None)
        rows.append({"name": name, "matched": len(own), "first_divergence": first})
    return rows


def _fit_batch(runner, batch: np.ndarray) -> np.ndarray:
    """A model with a fixed batch takes exactly that many inputs: the first ones, zero-padded."""
    fixed = runner.input_shape[0]
    if fixed is None or len(batch) == fixed:
        return batch
    batch = batch[:fixed]
    padding = np.zeros((fixed - len(batch), *batch.shape[1:]), np.float32)
    return np.concatenate([batch, padding])


def _compare(ref: np.ndarray, cand: np.ndarray) -> dict | None:
    """max_abs, rel and min per-input cosine of `cand` read in the layout that fits `ref` best; None if none fits."""
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    layouts = []
    if cand.shape == ref.shape:
        layouts.append(cand)
    if cand.ndim == 4 and cand.transpose(0, 2, 3, 1).shape == ref.shape:
        layouts.append(cand.transpose(0, 2, 3, 1))
    if not layouts and cand.size == ref.size and _squeezed(cand.shape) == _squeezed(ref.shape):
        layouts.append(cand.reshape(ref.shape))
    if not layouts or ref.ndim == 0 or ref.size == 0:
        return None
    scale = float(np.max(np.abs(ref))) or 1.0
    scores = []
    for aligned in layouts:
        delta = np.abs(aligned - ref)
        max_abs = float(np.max(delta)) if np.all(np.isfinite(delta)) else float("inf")
        cosine = float(cosine_similarity(ref.reshape(len(ref), -1), aligned.reshape(len(ref), -1)).min())
        scores.append({"max_abs": max_abs, "rel": max_abs / scale, "cosine": cosine})
    return min(scores, key=lambda s: s["rel"])


def _squeezed(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def _key(name: str) -> str:
    """A node name as every runtime can spell it (Core ML turns '/' and other marks into '_')."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class _Matcher:
    """Which reference layers a candidate tensor name can stand for."""

    def __init__(self, graph_def, layers: list[tuple[str, str]]):
        self.ops = dict(layers)
        self.order = {name: index for index, (name, _) in enumerate(layers)}
        self.by_key: dict[str, str] = {}
        for name, _ in layers:
            self.by_key.setdefault(_key(name), name)
        self.node_ops = {node.name: node.op for node in graph_def.node}
        self.inputs = {node.name: [i.lstrip("^").split(":")[0] for i in node.input] for node in graph_def.node}
        self.consumers: dict[str, list[str]] = {}
        for node, inputs in self.inputs.items():
            for source in inputs:
                self.consumers.setdefault(source, []).append(node)

    def readings(self, tensor_name: str) -> list[str]:
        """Reference layers `tensor_name` may hold: the nodes its name parts name, and their fused successors."""
        found: list[str] = []
        for part in tensor_name.split(";"):
            node = self._node(part)
            if node is not None:
                for member in [node, *self._fused_after(node)]:
                    if member not in found:
                        found.append(member)
        return found

    def _node(self, part: str) -> str | None:
        spelling = part
        for _ in range(3):
            if spelling in self.ops:
                return spelling
            if _key(spelling) in self.by_key:
                return self.by_key[_key(spelling)]
            spelling = _SUFFIX.sub("", spelling)
        return None

    def _fused_after(self, node: str) -> list[str]:
        """The chain of elementwise successors a runtime could fold into `node`'s op."""
        chain = []
        while len(chain) < MAX_FUSED:
            consumers = self.consumers.get(node, [])
            if len(consumers) != 1:
                break
            successor = consumers[0]
            others = [i for i in self.inputs[successor] if i != node]
            if (self.node_ops.get(successor) not in FUSABLE or successor not in self.ops
                    or any(self.node_ops.get(o) not in CONSTANT_OPS for o in others)):
                break
            chain.append(successor)
            node = successor
        return chain
