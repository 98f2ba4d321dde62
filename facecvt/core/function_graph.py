"""A TF2 concrete function (a Keras model's inference call, a SavedModel signature) as a frozen
GraphDef whose input placeholders and output nodes carry the model's own names."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadedGraph:
    """What a loader hands to `load_model`: the GraphDef and what it found on the way."""

    graph_def: object
    kind: str                  # "keras", "h5", "saved_model"
    loader: str                # which reader read the file, e.g. "keras 3.15 (.keras)"
    inputs: list               # input node names, in the model's order
    outputs: list              # output node names, in the model's order
    found: dict = field(default_factory=dict)  # what `inspect` shows: classes, layers, name mapping


def frozen_graph_def(concrete_function, output_names: list) -> tuple[object, dict]:
    """Variables -> constants (`convert_variables_to_constants_v2`), then the function's output
    nodes (`Identity`, `Identity_1`, ...) renamed to `output_names`. Returns the GraphDef and
    {output name: the function graph's original node name}."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete_function)
    graph_def = frozen.graph.as_graph_def()
    originals = [tensor.name.split(":")[0] for tensor in frozen.outputs]
    mapping = {}
    for original, wanted in zip(originals, output_names, strict=True):
        name = rename_node(graph_def, original, legal_node_name(wanted))
        mapping[name] = original
    return graph_def, mapping


def legal_node_name(name: str) -> str:
    """A TensorFlow node name for `name` (Keras and signature names may hold `:` or spaces)."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.\-/>]", "_", name.split(":")[0]).strip("/") or "output"
    return name if re.match(r"[A-Za-z0-9.]", name) else f"n{name}"


def rename_node(graph_def, old: str, new: str) -> str:
    """Rename node `old` to `new` (or `new_1`, ... when `new` is taken) and every reference to it."""
    if old == new:
        return new
    taken = {n.name for n in graph_def.node}
    name, i = new, 0
    while name in taken:
        i += 1
        name = f"{new}_{i}"
    for node in graph_def.node:
        if node.name == old:
            node.name = name
        for k, ref in enumerate(node.input):
            control = ref.startswith("^")
            base, sep, port = ref.lstrip("^").partition(":")
            if base == old:
                node.input[k] = ("^" if control else "") + name + (sep + port if sep else "")
    return name
