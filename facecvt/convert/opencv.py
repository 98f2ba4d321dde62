"""Export to OpenCV DNN: a binary .pb with the weights and a .pbtxt text graph OpenCV builds the net from.

The .pb is the clean graph after the OpenCV passes (facecvt.graph_ops.opencv_passes): still a valid
TensorFlow graph, readable alone with cv2.dnn.readNetFromTensorflow(pb). The .pbtxt follows what
OpenCV's tf_text_graph_*.py tools write, adapted to what OpenCV 5.0's importer does with it:

- no Const nodes: OpenCV takes constants from the .pb by name and refuses a Const defined in both
  files (the Const-keeping cv2.dnn.writeTextGraph output does not load next to its own .pb);
- OpenCV runs its subgraph fusions only on a binary graph, so the text graph carries them already
  fused: the Square/Sum/Maximum/Rsqrt/Mul chain as one L2Normalize node, Keras PReLU as PReLU;
- only the attributes the importer reads (the dtype attributes T, Tshape, Tidx... are dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.graph_ops import opencv_passes
from facecvt.graph_ops.graph import consumers, node_map, node_name, op_histogram, remove_nodes
from facecvt.graph_ops.registry import PassContext, run_pipeline


# Attributes OpenCV's TensorFlow importer reads; every other one is left out of the .pbtxt.
TEXT_GRAPH_ATTRS = frozenset({
    "data_format", "strides", "ksize", "padding", "dilations", "explicit_paddings",
    "squeeze_dims", "num_split", "begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
    "shrink_axis_mask", "keepdims", "keep_dims", "axis", "N", "alpha", "epsilon", "is_training",
    "dtype", "shape", "transpose_a", "transpose_b", "align_corners", "half_pixel_centers",
    "depth_radius", "bias", "beta", "mode", "loc_pred_transposed",
})


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, *, precision: str = "fp32", **_options) -> dict:
    """Write the OpenCV .pb to `tmp_path` and its .pbtxt to siblings['.pbtxt']; return what was done.

    Options of other targets (opset, calibration...) are ignored. The export workflow loads the .pb
    with and without the .pbtxt and requires them to agree (a mis-built text graph shows there).
    """
    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    ctx = PassContext(input_name=frozen.input_name, output_names=[frozen.output_name],
                      input_shape=frozen.input_shape, original_batch=frozen.notes.get("original_batch"))
    reports = run_pipeline(graph_def, ctx, opencv_passes.OPENCV_PIPELINE)
    text = text_graph(graph_def)
    pbtxt = Path(siblings[".pbtxt"])
    Path(tmp_path).write_bytes(graph_def.SerializeToString())
    pbtxt.write_text(_to_text(text))
    return {
        "passes": [r.as_dict() for r in reports],
        "ops": op_histogram(graph_def),
        "text_graph_ops": op_histogram(text),
        "bytes": {"pb": Path(tmp_path).stat().st_size, "pbtxt": pbtxt.stat().st_size},
        "runner_options": {"pbtxt": str(pbtxt)},
    }


def text_graph(graph_def):
    """The .pbtxt graph of an OpenCV-ready `graph_def`: fused chains, no constants, only read attributes."""
    text = type(graph_def)()
    text.CopyFrom(graph_def)
    _fuse_l2_normalize(text)
    _fuse_prelu(text)
    remove_nodes(text, {n.name for n in text.node if n.op == "Const"})
    for node in text.node:
        for key in [k for k in node.attr if k not in TEXT_GRAPH_ATTRS]:
            del node.attr[key]
    return text


def _fuse_l2_normalize(graph_def) -> None:
    """Mul(x, Rsqrt(Maximum(Sum(Square(x), axes), eps)))  ->  L2Normalize(x, axes), named as the Mul."""
    nodes, users = node_map(graph_def), consumers(graph_def)
    chain_nodes = set()
    for mul in [n for n in graph_def.node if n.op == "Mul" and len(n.input) == 2]:
        for x_ref, rsqrt_ref in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            chain = _l2_chain(nodes, x_ref, rsqrt_ref)
            if chain is None or any(len(users[n.name]) != 1 for n in chain[1:]):
                continue
            axes_ref = chain[-1].input[1]
            mul.op = "L2Normalize"
            del mul.input[:]
            mul.input.extend([x_ref, axes_ref])
            chain_nodes.update(n.name for n in chain[1:])
            break
    remove_nodes(graph_def, chain_nodes)


def _l2_chain(nodes: dict, x_ref: str, rsqrt_ref: str):
    """[x, Rsqrt, Maximum, Sum(axes), Square] nodes of an L2-normalise of x, else None."""
    rsqrt = nodes.get(node_name(rsqrt_ref))
    maximum = nodes.get(node_name(rsqrt.input[0])) if rsqrt is not None and rsqrt.op == "Rsqrt" else None
    if maximum is None or maximum.op != "Maximum":
        return None
    for sum_ref, eps_ref in ((maximum.input[0], maximum.input[1]), (maximum.input[1], maximum.input[0])):
        reduce, eps = nodes.get(node_name(sum_ref)), nodes.get(node_name(eps_ref))
        if reduce is None or reduce.op != "Sum" or eps is None or eps.op != "Const":
            continue
        square = nodes.get(node_name(reduce.input[0]))
        if square is not None and square.op == "Square" and square.input[0] == x_ref:
            return [nodes[node_name(x_ref)], rsqrt, maximum, square, reduce]
    return None


def _fuse_prelu(graph_def) -> None:
    """AddV2(Relu(x), Mul(Neg(alpha), Relu(Neg(x))))  ->  PReLU(x, alpha), named as the add.

    prelu_to_keras_form leaves every PReLU in this form, with a Const alpha.
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    chain_nodes = set()
    for add in [n for n in graph_def.node if n.op in ("Add", "AddV2") and len(n.input) == 2]:
        for relu_ref, mul_ref in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            match = _prelu_chain(nodes, relu_ref, mul_ref)
            if match is None or any(len(users[n.name]) != 1 for n in match[2]):
                continue
            x_ref, alpha_ref, chain = match
            add.op = "PReLU"
            del add.input[:]
            add.input.extend([x_ref, alpha_ref])
            chain_nodes.update(n.name for n in chain)
            break
    remove_nodes(graph_def, chain_nodes)


def _prelu_chain(nodes: dict, relu_ref: str, mul_ref: str):
    """(x, alpha, intermediate nodes) of a Keras-form PReLU, else None."""
    relu, mul = nodes.get(node_name(relu_ref)), nodes.get(node_name(mul_ref))
    if relu is None or relu.op != "Relu" or mul is None or mul.op != "Mul":
        return None
    x_ref = relu.input[0]
    for neg_alpha_ref, relu_neg_ref in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        neg_alpha, relu_neg = nodes.get(node_name(neg_alpha_ref)), nodes.get(node_name(relu_neg_ref))
        if neg_alpha is None or neg_alpha.op != "Neg" or relu_neg is None or relu_neg.op != "Relu":
            continue
        neg_x = nodes.get(node_name(relu_neg.input[0]))
        alpha = nodes.get(node_name(neg_alpha.input[0]))
        if neg_x is not None and neg_x.op == "Neg" and neg_x.input[0] == x_ref and alpha is not None \
                and alpha.op == "Const":
            return x_ref, neg_alpha.input[0], [relu, mul, neg_alpha, relu_neg, neg_x]
    return None


def _to_text(graph_def) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(graph_def)
