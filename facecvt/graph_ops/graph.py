"""Small helpers over a GraphDef: tensor-name parsing, node lookup, consumers, constants, execution order
and the producer of a tensor seen through pass-through ops."""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from facecvt.core.graph_names import ancestors, node_map, node_name, parse_input, tensor_ref  # noqa: F401
from facecvt.graph_ops.op_families import PASS_THROUGH


def consumers(graph_def) -> dict:
    """node name -> list of (consumer node, input index) over data and control inputs."""
    users = defaultdict(list)
    for n in graph_def.node:
        for i, ref in enumerate(n.input):
            users[node_name(ref)].append((n, i))
    return users


def replace_uses(graph_def, old_ref: str, new_ref: str, *, control_too: bool = False) -> int:
    """Point every data input that reads `old_ref` at `new_ref`; returns how many were changed."""
    old_name, old_port, _ = parse_input(old_ref)
    changed = 0
    for n in graph_def.node:
        for i, ref in enumerate(n.input):
            name, port, is_control = parse_input(ref)
            if name != old_name:
                continue
            if is_control:
                if control_too:
                    n.input[i] = "^" + node_name(new_ref)
                    changed += 1
            elif port == old_port:
                n.input[i] = new_ref
                changed += 1
    return changed


def remove_nodes(graph_def, names: set) -> None:
    """Delete nodes by name, and every control input that names them."""
    if not names:
        return
    for n in graph_def.node:
        if any(r.startswith("^") and r[1:] in names for r in n.input):
            inputs = [r for r in n.input if not (r.startswith("^") and r[1:] in names)]
            del n.input[:]
            n.input.extend(inputs)
    # delete runs of doomed nodes from the back: no copy of the (weight-carrying) nodes kept
    doomed = [i for i, n in enumerate(graph_def.node) if n.name in names]
    while doomed:
        end = doomed.pop()
        start = end
        while doomed and doomed[-1] == start - 1:
            start = doomed.pop()
        del graph_def.node[start:end + 1]


def const_value(node) -> np.ndarray | None:
    """The value of a Const node as a NumPy array, or None for any other node."""
    if node is None or node.op != "Const":
        return None
    from tensorflow.python.framework import tensor_util

    return tensor_util.MakeNdarray(node.attr["value"].tensor)


def make_const(graph_def_or_none, name: str, value: np.ndarray, dtype=None):
    """A Const NodeDef holding `value`; added to the graph when one is given (renamed if taken)."""
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.python.framework import dtypes, tensor_util

    value = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = dtypes.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    if graph_def_or_none is not None:
        node.name = unique_name(graph_def_or_none, name)
        graph_def_or_none.node.append(node)
    return node


def unique_name(graph_def, base: str) -> str:
    names = {n.name for n in graph_def.node}
    if base not in names:
        return base
    i = 1
    while f"{base}_{i}" in names:
        i += 1
    return f"{base}_{i}"


def op_histogram(graph_def) -> dict:
    counts = defaultdict(int)
    for n in graph_def.node:
        counts[n.op] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def rewire(graph_def, mapping: dict) -> int:
    """Apply {old tensor: new tensor} to every data input in one sweep (chains are followed).

    Keys and values are tensor refs ('node' or 'node:k'); control inputs are left alone.
    """
    canonical = {tensor_ref(*parse_input(k)[:2]): v for k, v in mapping.items()}
    changed = 0
    for node in graph_def.node:
        for i, ref in enumerate(node.input):
            if ref.startswith("^"):
                continue
            key = tensor_ref(*parse_input(ref)[:2])
            if key not in canonical:
                continue
            seen = set()
            while key in canonical and key not in seen:
                seen.add(key)
                key = tensor_ref(*parse_input(canonical[key])[:2])
            node.input[i] = key
            changed += 1
    return changed


def execution_order(graph_def) -> tuple[list, list]:
    """(nodes each after its inputs, otherwise in file order; nodes on a cycle, in file order).

    A NextIteration's input is a loop's back edge, not a dependency.
    """
    position = {n.name: i for i, n in enumerate(graph_def.node)}
    waiting = {n.name: set() if n.op == "NextIteration" else {node_name(r) for r in n.input if node_name(r) in position}
               for n in graph_def.node}
    users = consumers(graph_def)
    ready = [position[name] for name, inputs in waiting.items() if not inputs]
    heapq.heapify(ready)
    order = []
    while ready:
        node = graph_def.node[heapq.heappop(ready)]
        order.append(node)
        for user, _ in users[node.name]:
            pending = waiting[user.name]
            if node.name in pending:
                pending.discard(node.name)
                if not pending:
                    heapq.heappush(ready, position[user.name])
    placed = {n.name for n in order}
    return order, [n for n in graph_def.node if n.name not in placed]


def sort_by_execution_order(graph_def) -> None:
    """Order nodes so each comes after its inputs, otherwise keeping their order."""
    order, cyclic = execution_order(graph_def)
    if cyclic:
        raise ValueError("the graph has a cycle; it is not a clean inference graph")
    if any(a is not b for a, b in zip(order, graph_def.node)):
        sorted_nodes = [type(n)() for n in order]
        for copy, node in zip(sorted_nodes, order):
            copy.CopyFrom(node)
        del graph_def.node[:]
        graph_def.node.extend(sorted_nodes)


def resolve(nodes: dict, ref: str) -> str:
    """The tensor `ref` forwards, looking through pass-through ops (Identity, StopGradient, ...)."""
    node = nodes.get(node_name(ref))
    while node is not None and node.op in PASS_THROUGH and node.op != "IdentityN" and node.input \
            and not node.input[0].startswith("^"):
        ref = node.input[0]
        node = nodes.get(node_name(ref))
    return tensor_ref(*parse_input(ref)[:2])


def source(nodes: dict, ref: str):
    """The node that produces `ref`, looking through pass-through ops; None if it is not in the graph."""
    return nodes.get(node_name(resolve(nodes, ref)))
