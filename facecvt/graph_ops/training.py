"""Passes that turn a training graph into its inference graph: flags, conds, updates."""

from __future__ import annotations

from collections import deque

import numpy as np

from facecvt.graph_ops.evaluate import constant_nodes, evaluate
from facecvt.graph_ops.graph import (
    make_const, node_map, node_name, parse_input, remove_nodes, replace_uses, rewire, tensor_ref,
)
from facecvt.graph_ops.registry import graph_pass

SWITCH_OPS = {"Switch", "RefSwitch"}
MERGE_OPS = {"Merge", "RefMerge"}
FUNCTIONAL_CONDS = {"If", "StatelessIf"}
FUNCTION_CALLS = {"PartitionedCall", "StatefulPartitionedCall"}


@graph_pass
def set_training_flags(graph_def, ctx) -> str:
    """Placeholder `phase_train` (bool) -> Const False; `keep_prob` -> Const 1.0; names kept.

        phase_train = Placeholder[dtype=bool]      =>  phase_train = Const[value=False]
    """
    from tensorflow.python.framework import dtypes

    nodes = node_map(graph_def)
    done = []
    for name, value in ctx.training_flags.items():
        node = nodes.get(name)
        if node is None or node.op == "Const":
            continue
        dtype = dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype
        const = make_const(None, name, np.asarray(value, dtype=dtype))
        node.Clear()
        node.CopyFrom(const)
        done.append(f"{name}={value}")
    return f"set {', '.join(done)}" if done else "no training flags"


def _topological_order(graph_def) -> list:
    """Nodes in dependency order; NextIteration back edges are ignored."""
    nodes = node_map(graph_def)
    indegree = {n.name: 0 for n in graph_def.node}
    users = {n.name: [] for n in graph_def.node}
    for n in graph_def.node:
        if n.op == "NextIteration":
            continue
        for ref in n.input:
            src = node_name(ref)
            if src in nodes:
                indegree[n.name] += 1
                users[src].append(n.name)
    ready = deque(n.name for n in graph_def.node if indegree[n.name] == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(nodes[name])
        for user in users[name]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    placed = {n.name for n in order}
    order.extend(n for n in graph_def.node if n.name not in placed)  # cycles: keep them, in file order
    return order


def _constant_predicates(graph_def, switches) -> dict:
    """Switch name -> bool value of its predicate, for the switches whose predicate is constant."""
    constants = constant_nodes(graph_def)
    refs = {s.name: s.input[1] for s in switches if node_name(s.input[1]) in constants}
    values = evaluate(graph_def, set(refs.values()))
    return {name: bool(np.asarray(values[ref]).reshape(())) for name, ref in refs.items()}


@graph_pass
def prune_dead_branches(graph_def, ctx) -> str:
    """Keep the branch each constant-predicate v1 `tf.cond` takes; delete the other.

        Switch(x, pred=False):0 -> f(...) -> Merge(f, t)      =>  f(x)
        Switch(x, pred=False):1 -> t(...) ---^   (t is dead: removed, with its update ops)

    Deadness is propagated as TensorFlow's executor does: a node with a dead input is
    dead; a Merge is live when one input is. Nothing depends on input order.
    """
    switches = [n for n in graph_def.node if n.op in SWITCH_OPS]
    if not switches:
        return "no Switch/Merge"
    taken = _constant_predicates(graph_def, switches)
    dead_tensors: set = set()  # (node, port)
    dead_nodes: set = set()
    live_merge_input: dict = {}

    def is_dead(ref: str) -> bool:
        name, port, control = parse_input(ref)
        return name in dead_nodes or (not control and (name, port) in dead_tensors)

    for node in _topological_order(graph_def):
        if node.op in MERGE_OPS:
            live = [ref for ref in node.input if not ref.startswith("^") and not is_dead(ref)]
            if not live:
                dead_nodes.add(node.name)
            elif len(live) == 1:
                live_merge_input[node.name] = live[0]
            continue
        if any(is_dead(ref) for ref in node.input):
            dead_nodes.add(node.name)
            continue
        if node.name in taken:
            dead_tensors.add((node.name, 0 if taken[node.name] else 1))

    remove_nodes(graph_def, dead_nodes)
    nodes = node_map(graph_def)
    mapping = {tensor_ref(name, 1 if value else 0): nodes[name].input[0]
               for name, value in taken.items() if name not in dead_nodes}
    reads_index = {node_name(r) for n in graph_def.node for r in n.input
                   if not r.startswith("^") and parse_input(r)[1] == 1}
    for name, live in live_merge_input.items():
        mapping[name] = live
        if name in reads_index:  # Merge:1 is the index of the input taken
            index = [r for r in nodes[name].input if not r.startswith("^")].index(live)
            mapping[f"{name}:1"] = make_const(graph_def, f"{name}/value_index", np.int32(index)).name
    rewire(graph_def, mapping)
    resolved = set(taken) | set(live_merge_input)
    remove_nodes(graph_def, resolved)
    return (f"{len(taken)} constant conds: removed {len(dead_nodes)} dead nodes, "
            f"{len(taken)} Switch and {len(live_merge_input)} Merge")


@graph_pass
def drop_control_edges(graph_def, ctx) -> str:
    """Remove every control input: with the training branches gone they only order stateless ops.

        Const[^cond/switch_f]  =>  Const
    """
    dropped = 0
    for node in graph_def.node:
        data = [r for r in node.input if not r.startswith("^")]
        if len(data) != len(node.input):
            dropped += len(node.input) - len(data)
            del node.input[:]
            node.input.extend(data)
    return f"dropped {dropped} control edges"


def _function_body(graph_def, func_name: str):
    """The GraphDef of a library function, and its output-arg -> flat tensor map."""
    from tensorflow.python.framework import function_def_to_graph

    fdef = next((f for f in graph_def.library.function if f.signature.name == func_name), None)
    if fdef is None:
        raise KeyError(func_name)
    body, nested_to_flat = function_def_to_graph.function_def_to_graph_def(fdef)
    outputs = [nested_to_flat[fdef.ret[arg.name]] for arg in fdef.signature.output_arg]
    inputs = [arg.name for arg in fdef.signature.input_arg]
    return body, inputs, outputs


def _inline_call(graph_def, call, func_name: str, args: list) -> None:
    """Replace node `call` by the body of `func_name`, fed with tensors `args`."""
    body, arg_names, outputs = _function_body(graph_def, func_name)
    prefix = f"{call.name}/"
    body_names = {n.name for n in body.node}
    arg_refs = dict(zip(arg_names, args))

    def rename(ref: str) -> str:
        name, port, control = parse_input(ref)
        if name in arg_refs:
            if control:
                return "^" + node_name(arg_refs[name])
            return arg_refs[name]
        if name in body_names:
            return ("^" if control else "") + tensor_ref(prefix + name, max(port, 0))
        return ref

    for node in body.node:
        if node.name in arg_refs:
            continue  # the Placeholder standing for an argument
        new = graph_def.node.add()
        new.CopyFrom(node)
        new.name = prefix + node.name
        del new.input[:]
        new.input.extend(rename(r) for r in node.input)
        new.ClearField("device")
    call_controls = [r for r in call.input if r.startswith("^")]
    for i, out in enumerate(outputs):
        replace_uses(graph_def, tensor_ref(call.name, i), rename(out))
    for node in graph_def.node:  # control users of the call now wait on its inputs
        if f"^{call.name}" in node.input:
            node.input.remove(f"^{call.name}")
            node.input.extend(r for r in call_controls + ["^" + node_name(a) for a in args]
                              if r not in node.input)
    remove_nodes(graph_def, {call.name})


@graph_pass
def inline_functional_conds(graph_def, ctx) -> str:
    """Inline the branch a constant-predicate v2 `If`/`StatelessIf` takes (TF2 `tf.cond`).

        StatelessIf(pred=False, x, then_branch=f_true, else_branch=f_false)  =>  f_false's body on x

    Function calls (`PartitionedCall`) inside are inlined too; repeats until none is left
    whose predicate is constant (conds nest).
    """
    inlined = calls = 0
    while True:
        conds = [n for n in graph_def.node if n.op in FUNCTIONAL_CONDS]
        plain_calls = [n for n in graph_def.node if n.op in FUNCTION_CALLS]
        for call in plain_calls:
            args = [r for r in call.input if not r.startswith("^")]
            _inline_call(graph_def, call, call.attr["f"].func.name, args)
            calls += 1
        constants = constant_nodes(graph_def)
        decidable = [n for n in conds if node_name(n.input[0]) in constants]
        if not decidable and not plain_calls:
            break
        values = evaluate(graph_def, {n.input[0] for n in decidable})
        for node in decidable:
            pred = bool(np.asarray(values[node.input[0]]).reshape(-1)[0])
            branch = node.attr["then_branch" if pred else "else_branch"].func.name
            args = [r for r in node.input[1:] if not r.startswith("^")]
            _inline_call(graph_def, node, branch, args)
            inlined += 1
    if not any(n.op in FUNCTIONAL_CONDS | FUNCTION_CALLS for n in graph_def.node):
        graph_def.ClearField("library")
    left = sum(n.op in FUNCTIONAL_CONDS for n in graph_def.node)
    summary = f"inlined {inlined} If/StatelessIf" + (f" and {calls} function calls" if calls else "")
    return summary + (f"; {left} left with a non-constant predicate" if left else "")


RANDOM_UNIFORM = {"RandomUniform"}


def _random_uniform_source(nodes, ref: str) -> bool:
    """True when `ref` is a RandomUniform output (values in [0, 1)), looking through Identity."""
    node = nodes.get(node_name(ref))
    while node is not None and node.op in ("Identity", "StopGradient") and node.input:
        node = nodes.get(node_name(node.input[0]))
    return node is not None and node.op in RANDOM_UNIFORM


@graph_pass
def remove_inference_dropout(graph_def, ctx) -> str:
    """Dropout with keep probability 1 keeps every value: its random mask becomes a constant.

        Floor(AddV2(keep_prob=1.0, RandomUniform))    =>  Const 1.0     (TF1 nn.dropout)
        GreaterEqual(RandomUniform, rate=0.0)         =>  Const True    (TF2 nn.dropout)
    u in [0, 1) makes both exact; `bypass_neutral_arithmetic` then drops the x * 1 it leaves.
    """
    from facecvt.graph_ops.graph import const_value

    nodes = node_map(graph_def)
    replaced = 0
    for node in graph_def.node:
        value = None
        if node.op == "Floor":
            add = nodes.get(node_name(node.input[0]))
            if add is not None and add.op in ("Add", "AddV2") and len(add.input) == 2:
                for random_ref, keep_ref in (add.input, reversed(add.input)):
                    keep = const_value(nodes.get(node_name(keep_ref)))
                    if keep is not None and _random_uniform_source(nodes, random_ref) and np.all(keep == np.floor(keep)):
                        value = keep.astype(np.float32)
                        break
        elif node.op == "GreaterEqual" and _random_uniform_source(nodes, node.input[0]):
            rate = const_value(nodes.get(node_name(node.input[1])))
            if rate is not None and np.all(rate <= 0):
                value = np.ones(rate.shape, dtype=bool)
        if value is not None:
            node.CopyFrom(make_const(None, node.name, value))
            replaced += 1
    from facecvt.graph_ops.cleanup import strip_unused

    strip_unused(graph_def, ctx)
    return f"replaced {replaced} dropout masks by constants"


def _neutral_operand(nodes, node):
    """The input `node` passes through unchanged (x * 1, x / 1, x + 0, x - 0, select(True, x, c)), or None."""
    from facecvt.graph_ops.graph import const_value

    def scalar(ref):
        value = const_value(nodes.get(node_name(ref)))
        return value if value is not None and value.size == 1 and value.ndim <= 1 else None

    data = [r for r in node.input if not r.startswith("^")]
    if node.op == "Mul":
        for x, c in ((0, 1), (1, 0)):
            value = scalar(data[c])
            if value is not None and value.reshape(()) == 1:
                return data[x]
    elif node.op in ("RealDiv", "Div"):
        value = scalar(data[1])
        if value is not None and value.reshape(()) == 1:
            return data[0]
    elif node.op in ("Add", "AddV2", "Sub"):
        for x, c in (((0, 1), (1, 0)) if node.op != "Sub" else ((0, 1),)):
            value = scalar(data[c])
            if value is not None and value.reshape(()) == 0:
                return data[x]
    elif node.op in ("SelectV2", "Select") and len(data) == 3:
        condition, other = scalar(data[0]), scalar(data[2])
        if condition is not None and bool(condition.reshape(())) and (other is not None or node.op == "Select"):
            return data[1]
    return None


@graph_pass
def bypass_neutral_arithmetic(graph_def, ctx) -> str:
    """Arithmetic with a neutral scalar constant passes its other input through.

        Mul(x, 1.0) -> y   ;   RealDiv(x, 1.0)   ;   AddV2(x, 0.0)   ;   SelectV2(True, x, 0.0)   =>  x -> y
    Only scalar constants, so broadcasting never changed the shape. Named outputs are kept.
    """
    nodes = node_map(graph_def)
    protected = {ctx.input_name, *ctx.output_names}
    mapping = {}
    for node in graph_def.node:
        if node.name in protected:
            continue
        passed = _neutral_operand(nodes, node)
        if passed is not None:
            mapping[node.name] = passed
    rewire(graph_def, mapping)
    from facecvt.graph_ops.cleanup import strip_unused

    strip_unused(graph_def, ctx)
    return f"bypassed {len(mapping)} neutral operations"
