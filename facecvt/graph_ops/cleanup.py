"""Structural passes: the new input, unused nodes, pass-through ops, order and devices."""

from __future__ import annotations

from facecvt.core.errors import FacecvtError
from facecvt.graph_ops.graph import (ancestors, node_map, node_name, remove_nodes, rewire,
                                     sort_by_execution_order)
from facecvt.graph_ops.op_families import PASS_THROUGH
from facecvt.graph_ops.registry import graph_pass


@graph_pass
def replace_input(graph_def, ctx) -> str:
    """Make the image input a float Placeholder of the model's shape, dynamic batch by default.

        input = Identity(batch_join:0)             =>  input = Placeholder[shape=(-1,160,160,3)]
        input = Placeholder[shape=(1,160,160,3)]   =>  input = Placeholder[shape=(-1,160,160,3)]
    """
    from tensorflow.core.framework import tensor_shape_pb2, types_pb2

    node = node_map(graph_def)[ctx.input_name]
    before = node.op
    node.Clear()
    node.name = ctx.input_name
    node.op = "Placeholder"
    node.attr["dtype"].type = types_pb2.DT_FLOAT
    shape = tensor_shape_pb2.TensorShapeProto()
    for dim in ctx.input_shape:
        shape.dim.add(size=-1 if dim is None else int(dim))
    node.attr["shape"].shape.CopyFrom(shape)
    dims = "x".join("?" if d is None else str(d) for d in ctx.input_shape)
    return f"{ctx.input_name}: {before} -> Placeholder {dims}"


@graph_pass
def strip_unused(graph_def, ctx) -> str:
    """Keep only the input and what the outputs need; the dead code other passes leave goes too.

        input -> ... -> embeddings;  batch_join -> label_batch   =>  input -> ... -> embeddings
        Conv2D(x, W) ... Conv2D(x, W * s);  W read by nothing    =>  Conv2D(x, W * s)
    Other passes never strip: they leave what they replaced, and the pipelines list this pass after
    them (dead nodes would count as consumers, and OpenCV imports every node).
    """
    names = {n.name for n in graph_def.node}
    missing = [name for name in ctx.output_names if name not in names]
    if missing:
        raise FacecvtError(f"output node {missing[0]!r} is not in the graph; pass the right --output")
    keep = ancestors(graph_def, [*ctx.output_names, ctx.input_name])
    drop = names - keep
    remove_nodes(graph_def, drop)
    return f"removed {len(drop)} unused nodes"


@graph_pass
def remove_identity(graph_def, ctx) -> str:
    """Bypass pass-through ops (Identity, StopGradient, CheckNumerics, Snapshot, ...).

        conv -> Identity -> relu   =>  conv -> relu
    Named inputs and outputs are kept even when they are Identity nodes.
    """
    protected = {ctx.input_name, *ctx.output_names}
    mapping, bypassed = {}, set()
    for node in graph_def.node:
        if node.op not in PASS_THROUGH or node.name in protected:
            continue
        data = [r for r in node.input if not r.startswith("^")]
        if node.op == "IdentityN":
            for i, ref in enumerate(data):
                mapping[f"{node.name}:{i}"] = ref
        elif len(data) == 1:
            mapping[node.name] = data[0]
        else:
            continue
        bypassed.add(node.name)
    rewire(graph_def, mapping)
    # control users of a bypassed node now wait on what it read
    nodes = node_map(graph_def)
    for node in graph_def.node:
        controls = [r for r in node.input if r.startswith("^") and r[1:] in bypassed]
        for ref in controls:
            node.input.remove(ref)
            for src in nodes[ref[1:]].input:
                new = "^" + node_name(src)
                if new not in node.input:
                    node.input.append(new)
    remove_nodes(graph_def, bypassed)
    return f"bypassed {len(bypassed)} pass-through nodes"


@graph_pass
def sort_topologically(graph_def, ctx) -> str:
    """Order nodes so each comes after its inputs (OpenCV's importer and readers expect it).

        Relu(b); b = BiasAdd(a); a = Conv2D(input)   =>  a = Conv2D(input); b = BiasAdd(a); Relu(b)
    Nodes already in order keep their order.
    """
    sort_by_execution_order(graph_def)
    return f"sorted {len(graph_def.node)} nodes"


@graph_pass
def clear_devices(graph_def, ctx) -> str:
    """Drop device placements (`/device:GPU:0`) and the `_class` colocation attributes."""
    cleared = 0
    for node in graph_def.node:
        if node.device:
            node.device = ""
            cleared += 1
        for attr in ("_class", "_output_shapes"):
            if attr in node.attr:
                del node.attr[attr]
    return f"cleared {cleared} devices"

