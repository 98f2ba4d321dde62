"""Tensor and node names in a GraphDef: parsing input references, looking nodes up, walking back.

The lowest layer's share of the graph helpers (the loaders need them); `graph_ops.graph` re-exports
them beside the rewriting helpers.
"""

from __future__ import annotations


def parse_input(ref: str) -> tuple[str, int, bool]:
    """'^name' -> (name, -1, True); 'name:2' -> (name, 2, False); 'name' -> (name, 0, False)."""
    if ref.startswith("^"):
        return ref[1:], -1, True
    name, sep, port = ref.rpartition(":")
    if sep and port.isdigit():
        return name, int(port), False
    return ref, 0, False


def node_name(ref: str) -> str:
    return parse_input(ref)[0]


def tensor_ref(name: str, port: int) -> str:
    return name if port == 0 else f"{name}:{port}"


def node_map(graph_def) -> dict:
    return {n.name: n for n in graph_def.node}


def ancestors(graph_def, roots, *, control: bool = True) -> set:
    """Names of `roots` and every node they depend on."""
    nodes = node_map(graph_def)
    seen, stack = set(), [node_name(r) for r in roots]
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        for ref in nodes[name].input:
            if control or not ref.startswith("^"):
                stack.append(node_name(ref))
    return seen
