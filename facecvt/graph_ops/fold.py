"""Arithmetic folding: constants, batch norms and per-channel scales into weights, bias chains."""

from __future__ import annotations

import numpy as np

from facecvt.graph_ops.evaluate import constant_nodes, evaluate
from facecvt.graph_ops.graph import (
    const_value, consumers, make_const, node_map, node_name, parse_input, remove_nodes, rewire, unique_name,
)
from facecvt.graph_ops.match import const, match, matches, op, tensor
from facecvt.graph_ops.op_families import FUSED_BATCH_NORMS, WEIGHTED
from facecvt.graph_ops.registry import graph_pass


@graph_pass
def fold_constants(graph_def, ctx) -> str:
    """Evaluate every subgraph that reads only constants and store the result as one Const.

        Const(a) -> Rsqrt -> Mul(Const(b))   =>  Const(rsqrt(a) * b)
    Only tensors read by non-constant nodes are materialised; a folded single-output
    node keeps its name.
    """
    constants = constant_nodes(graph_def)
    nodes = node_map(graph_def)
    frontier, multi_output = set(), set()
    for node in graph_def.node:
        for ref in node.input:
            name, port, control = parse_input(ref)
            if port > 0:
                multi_output.add(name)
            if node.name not in constants and not control and name in constants and nodes[name].op != "Const":
                frontier.add(f"{name}:{port}")
    if not frontier:
        return "nothing to fold"
    values = evaluate(graph_def, sorted(frontier))
    mapping = {}
    for ref, value in values.items():
        name, port, _ = parse_input(ref)
        if name in multi_output:
            mapping[ref] = make_const(graph_def, f"{name}/_folded_{port}", value).name
        else:
            nodes[name].CopyFrom(make_const(None, name, value))
    rewire(graph_def, mapping)
    return f"folded {len(values)} constant subgraphs"


def _weights_node(nodes, producer):
    """The Const holding `producer`'s weights (its second input), or None."""
    return nodes.get(node_name(producer.input[1])) if len(producer.input) > 1 else None


def _scale_output_channels(producer, weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Weights of `producer` with output channel c multiplied by scale[c]."""
    if producer.op == "Conv2D":
        return weights * scale.reshape(1, 1, 1, -1)
    if producer.op == "DepthwiseConv2dNative":
        kh, kw, cin, mult = weights.shape
        return weights * scale.reshape(1, 1, cin, mult)
    if producer.attr["transpose_b"].b:  # MatMul with weights stored (out, in)
        return weights * scale.reshape(-1, 1)
    return weights * scale.reshape(1, -1)


def _foldable_producer(graph_def, nodes, users, ref: str, channels: int):
    """The Conv2D/Depthwise/MatMul whose output channels reach `ref` unchanged, and the path to it.

    Walks back through Reshapes that keep the channel dimension last (slim's 2-D batch
    norm reshapes MatMul output to (-1, 1, 1, C)); every node on the path must have one user
    that reads its values (a Shape of it does not count).
    """
    path = []
    name = node_name(ref)
    while True:
        node = nodes.get(name)
        value_users = [u for u, _ in users.get(name, []) if u.op != "Shape"]  # Shape reads no values
        if node is None or len(value_users) != 1 or parse_input(ref)[1] != 0:
            return None, []
        if node.op in WEIGHTED:
            weights = _weights_node(nodes, node)
            if weights is None or weights.op != "Const" or node.op == "MatMul" and node.attr["transpose_a"].b:
                return None, []
            return node, path
        if node.op == "BiasAdd" or (node.op == "Reshape" and _keeps_last_dim(nodes, node, channels)):
            path.append(node)
            ref = node.input[0]
            name = node_name(ref)
            continue
        return None, []


def _keeps_last_dim(nodes, reshape, channels: int) -> bool:
    shape = const_value(nodes.get(node_name(reshape.input[1])))
    return shape is not None and shape.size >= 1 and int(shape.reshape(-1)[-1]) == channels


def _fold_scale(graph_def, nodes, users, x_ref: str, scale: np.ndarray) -> bool:
    """Multiply the weights (and biases on the way) feeding `x_ref` by `scale`, if possible."""
    producer, path = _foldable_producer(graph_def, nodes, users, x_ref, scale.shape[-1])
    if producer is None:
        return False
    weights_node = _weights_node(nodes, producer)
    if len(users[weights_node.name]) != 1:  # shared weights: give this layer its own copy
        make_const(graph_def, weights_node.name + "/folded", const_value(weights_node))
        copy = graph_def.node[-1]  # make_const appends a copy: scale the node in the graph
        producer.input[1] = copy.name
        nodes[copy.name] = copy
        users[copy.name] = [(producer, 1)]
        users[weights_node.name] = [u for u in users[weights_node.name] if u[0] is not producer]
        weights_node = copy
    value = const_value(weights_node)
    weights_node.CopyFrom(make_const(None, weights_node.name,
                                     _scale_output_channels(producer, value, scale).astype(value.dtype)))
    for node in path:
        if node.op == "BiasAdd":
            bias_node = nodes[node_name(node.input[1])]
            bias = const_value(bias_node)
            if bias is None or len(users[bias_node.name]) != 1:
                return False  # cannot happen after fold_constants; the weights are already scaled
            bias_node.CopyFrom(make_const(None, bias_node.name, (bias * scale).astype(bias.dtype)))
    return True


def _as_bias_add(node, x_ref: str, bias_name: str, dtype_attr) -> None:
    """Turn `node` (keeping its name) into BiasAdd(x, bias)."""
    name = node.name
    node.Clear()
    node.name = name
    node.op = "BiasAdd"
    node.input.extend([x_ref, bias_name])
    node.attr["T"].CopyFrom(dtype_attr)


@graph_pass
def fold_batch_norms(graph_def, ctx) -> str:
    """Fold inference batch norms into the preceding Conv2D / DepthwiseConv2dNative / MatMul.

        Conv2D(x, W) -> FusedBatchNorm(scale, offset, mean, var)
            =>  Conv2D(x, W * s) -> BiasAdd(offset - mean * s),   s = scale / sqrt(var + eps)
    A batch norm with no foldable producer becomes Mul(s) -> BiasAdd(b), which is still
    exact and every runtime supports.
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    folded = scaled = 0
    for node in list(graph_def.node):
        if not is_inference_batch_norm(node):
            continue
        params = [const_value(nodes.get(node_name(r))) for r in node.input[1:5]]
        if any(p is None for p in params):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        s = gamma / np.sqrt(var + node.attr["epsilon"].f)
        bias = (beta - mean * s).astype(np.float32)
        if any(parse_input(r)[1] > 0 for u, _ in users.get(node.name, []) for r in u.input
               if node_name(r) == node.name):
            continue  # batch statistics are read: not an inference batch norm
        bias_name = make_const(graph_def, f"{node.name}/bias", bias).name
        bias_node = graph_def.node[-1]  # make_const appends a copy: track the node in the graph
        nodes[bias_name], users[bias_name] = bias_node, [(node, 1)]  # a batch norm right after may fold through it
        x_ref = node.input[0]
        if _fold_scale(graph_def, nodes, users, x_ref, s):
            _as_bias_add(node, x_ref, bias_name, node.attr["T"])
            folded += 1
        else:
            scale_name = make_const(graph_def, f"{node.name}/scale", s.astype(np.float32)).name
            mul = graph_def.node.add(name=unique_name(graph_def, f"{node.name}/mul"), op="Mul",
                                     input=[x_ref, scale_name])
            mul.attr["T"].CopyFrom(node.attr["T"])
            _as_bias_add(node, mul.name, bias_name, node.attr["T"])
            scaled += 1
    return f"folded {folded} batch norms into weights" + (f", {scaled} into Mul+BiasAdd" if scaled else "")


def is_inference_batch_norm(node) -> bool:
    """A FusedBatchNorm in inference mode (a cond's training branch holds its is_training twin)."""
    return node.op in FUSED_BATCH_NORMS and not node.attr["is_training"].b


def _channel_vector(value):
    """`value` as a per-channel vector if it broadcasts along the last axis only, else None."""
    if value is None or value.ndim == 0:
        return None
    if any(d != 1 for d in value.shape[:-1]):
        return None
    return value.reshape(-1)


SCALED = op("Mul", tensor("x"), const("scale", where=lambda v: _channel_vector(v) is not None))
BIASED = op("Add|AddV2|Sub|BiasAdd", op(WEIGHTED | {"BiasAdd"}, name="x"),
            const("bias", where=lambda v: _channel_vector(v) is not None))


@graph_pass
def fold_scales_into_weights(graph_def, ctx) -> str:
    """Fold unfused batch norms: a per-channel Mul after a weighted op goes into its weights.

        Conv2D(x, W) [-> BiasAdd(b)] -> Mul(c)   =>  Conv2D(x, W * c) [-> BiasAdd(b * c)]
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    mapping, removed = {}, set()
    for node in [n for n in graph_def.node if n.op == "Mul"]:
        for m in matches(SCALED, nodes, node.name):
            scale = _channel_vector(m.values["scale"])
            if _fold_scale(graph_def, nodes, users, m["x"], scale.astype(np.float64)):
                mapping[node.name] = m["x"]
                removed.add(node.name)
                break
    rewire(graph_def, mapping)
    remove_nodes(graph_def, removed)
    return f"folded {len(removed)} per-channel scales into weights"


@graph_pass
def merge_biases(graph_def, ctx) -> str:
    """Per-channel Add/AddV2/Sub of a constant -> BiasAdd; consecutive BiasAdds -> one.

        Conv2D -> BiasAdd(b1) -> AddV2(b2)     =>  Conv2D -> BiasAdd(b1 + b2)
        MatMul -> Sub(c)                        =>  MatMul -> BiasAdd(-c)
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    converted = merged = 0
    for node in list(graph_def.node):
        m = match(BIASED, nodes, node.name)
        if m is None:
            continue
        x_ref, x_node, bias = m["x"], m.nodes["x"], _channel_vector(m.values["bias"])
        if node.op == "Sub":
            bias = -bias
        if node.op != "BiasAdd":
            _as_bias_add(node, x_ref, make_const(graph_def, f"{node.name}/bias", bias).name, node.attr["T"])
            converted += 1
        if x_node.op == "BiasAdd" and len(users[x_node.name]) == 1 and parse_input(x_ref)[1] == 0:
            first = const_value(nodes.get(node_name(x_node.input[1])))
            if first is not None and first.shape == bias.shape:
                node.input[0] = x_node.input[0]
                node.input[1] = make_const(graph_def, f"{node.name}/merged_bias", first + bias).name
                merged += 1
    return f"{converted} constant adds to BiasAdd, merged {merged} BiasAdd pairs"
