"""Freeze a training graph the way facenet's `freeze_graph.py` does."""

from __future__ import annotations


def rewrite_ref_ops(graph_def) -> int:
    """RefSwitch -> Switch (reading `moving_*/read`), AssignSub -> Sub, AssignAdd -> Add.

    convert_variables_to_constants cannot turn a ref-typed update into a constant graph,
    so facenet rewrites the moving-average updates to their plain arithmetic first.
    Returns the number of nodes rewritten.
    """
    rewritten = 0
    for node in graph_def.node:
        if node.op == "RefSwitch":
            node.op = "Switch"
            for i, ref in enumerate(node.input):
                if "moving_" in ref and not ref.startswith("^") and not ref.endswith("/read"):
                    node.input[i] = ref + "/read"
            rewritten += 1
        elif node.op in ("AssignSub", "AssignAdd"):
            node.op = "Sub" if node.op == "AssignSub" else "Add"
            node.attr.pop("use_locking", None)
            rewritten += 1
    return rewritten


def freeze_session(session, graph_def, output_names) -> object:
    """facenet's freeze_graph_def: rewrite the ref ops, then turn variables into constants."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    graph_def_copy = type(graph_def)()
    graph_def_copy.CopyFrom(graph_def)
    rewrite_ref_ops(graph_def_copy)
    return tf.compat.v1.graph_util.convert_variables_to_constants(session, graph_def_copy, list(output_names))
