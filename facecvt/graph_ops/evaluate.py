"""Evaluate the parts of a graph that depend only on constants, with TensorFlow itself."""

from __future__ import annotations

from facecvt.graph_ops.graph import node_map, node_name, parse_input

# ops whose value may change from run to run, or that carry control flow / state
NOT_FOLDABLE = {
    "Placeholder", "PlaceholderWithDefault", "PlaceholderV2", "VariableV2", "VarHandleOp", "ReadVariableOp",
    "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit", "RefExit", "NextIteration",
    "LoopCond", "If", "StatelessIf", "While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall",
    "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt", "Multinomial",
    "RandomShuffle", "NoOp", "Assert", "Print", "PrintV2", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "FIFOQueueV2", "QueueDequeueUpToV2", "QueueDequeueManyV2", "QueueDequeueV2", "Assign", "AssignSub",
    "AssignAdd", "ControlTrigger",
}


def constant_nodes(graph_def) -> set:
    """Names of nodes whose every output is computable from Const nodes alone (Consts included)."""
    nodes = node_map(graph_def)
    memo: dict = {}

    def is_constant(name: str) -> bool:
        stack = [name]
        while stack:
            current = stack[-1]
            if memo.get(current) is not None:  # decided; None is "in progress", still to decide
                stack.pop()
                continue
            node = nodes.get(current)
            if node is None or (node.op != "Const" and (node.op in NOT_FOLDABLE or node.op.startswith("Stateful"))):
                memo[current] = False
                stack.pop()
                continue
            pending = [node_name(r) for r in node.input if node_name(r) not in memo]
            if pending and current not in memo:
                memo[current] = None  # in progress: a cycle back to it reads as not constant
                stack.extend(pending)
                continue
            memo[current] = all(memo[node_name(r)] for r in node.input)
            stack.pop()
        return bool(memo[name])

    return {n.name for n in graph_def.node if is_constant(n.name)}


def evaluate(graph_def, refs) -> dict:
    """Values of tensors `refs` ('node' or 'node:k'), all of which must be constant."""
    from facecvt.graph_ops.graph import ancestors
    from facecvt.core.tf_env import import_tf

    refs = list(refs)
    if not refs:
        return {}
    tf = import_tf()
    needed = ancestors(graph_def, refs)
    sub = type(graph_def)()
    sub.versions.CopyFrom(graph_def.versions)
    sub.library.CopyFrom(graph_def.library)
    sub.node.extend(n for n in graph_def.node if n.name in needed)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(sub, name="")
    fetches = [f"{name}:{max(port, 0)}" for name, port, _ in map(parse_input, refs)]
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(fetches)
    return dict(zip(refs, values))
