"""Fusions for OpenCV's text graph (.pbtxt): OpenCV fuses these chains only when it reads a binary graph.

They run on a copy of the OpenCV-ready graph, which becomes the .pbtxt; the .pb keeps the chains
(OpenCV reads a fused node's constants, such as PReLU's alpha, from the .pb by name).
"""

from __future__ import annotations

from facecvt.graph_ops.graph import consumers, node_map, remove_nodes
from facecvt.graph_ops.match import const, matches, op, tensor
from facecvt.graph_ops.registry import graph_pass

TEXT_GRAPH_PIPELINE = ["fuse_l2_normalize", "fuse_prelu"]

X = tensor("x")
L2_NORMALIZE = op("Mul", X, op("Rsqrt", op("Maximum", op("Sum", op("Square", X, name="square"), tensor("axes"),
                                                          name="sum"),
                                           const(), name="maximum"), name="rsqrt"))
KERAS_PRELU = op("Add|AddV2", op("Relu", X, name="relu"),
                 op("Mul", op("Neg", const("alpha"), name="neg_alpha"),
                    op("Relu", op("Neg", X, name="neg_x"), name="relu_neg"), name="mul"))


def _fuse(graph_def, pattern, fused_op: str, inputs) -> int:
    """Turn each match of `pattern` whose inner nodes have no other consumer into one `fused_op` node.

    The fused node keeps the name of the matched root (so consumers need no change) and reads
    `inputs(match)`; the inner nodes (the named op patterns) are removed. Returns how many were fused.
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    fused, inner = 0, set()
    for root in list(graph_def.node):
        for m in matches(pattern, nodes, root.name):
            chain = [n for n in m.nodes.values() if n is not root]
            if any(len(users[n.name]) != 1 for n in chain):
                continue
            root.op = fused_op
            del root.input[:]
            root.input.extend(inputs(m))
            inner.update(n.name for n in chain)
            fused += 1
            break
    remove_nodes(graph_def, inner)
    return fused


@graph_pass
def fuse_l2_normalize(graph_def, ctx) -> str:
    """An L2-normalise chain becomes one L2Normalize node, named as its Mul.

        Mul(x, Rsqrt(Maximum(Sum(Square(x), axes), eps)))  ->  L2Normalize(x, axes)
    """
    count = _fuse(graph_def, L2_NORMALIZE, "L2Normalize", lambda m: [m["x"], m["axes"]])
    return f"fused {count} L2 normalisations"


@graph_pass
def fuse_prelu(graph_def, ctx) -> str:
    """A Keras-form PReLU (as prelu_to_keras_form leaves every PReLU) becomes one PReLU node, named as its add.

        AddV2(Relu(x), Mul(Neg(alpha), Relu(Neg(x))))  ->  PReLU(x, alpha)
    """
    count = _fuse(graph_def, KERAS_PRELU, "PReLU", lambda m: [m["x"], m["alpha"]])
    return f"fused {count} PReLUs"
