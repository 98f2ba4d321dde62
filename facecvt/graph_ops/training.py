"""Passes that turn a training graph into its inference graph: flags, conds, updates."""

from __future__ import annotations

import numpy as np

from facecvt.graph_ops.evaluate import constant_nodes, evaluate
from facecvt.graph_ops.graph import (
    execution_order, make_const, node_map, node_name, parse_input, remove_nodes, replace_uses, rewire, tensor_ref,
)
from facecvt.graph_ops.match import const, either, match, op, tensor
from facecvt.graph_ops.op_families import FUNCTION_CALLS, FUNCTIONAL_CONDS, MERGES, SWITCHES
from facecvt.graph_ops.registry import graph_pass


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
    switches = [n for n in graph_def.node if n.op in SWITCHES]
    if not switches:
        return "no Switch/Merge"
    taken = _constant_predicates(graph_def, switches)
    dead_tensors: set = set()  # (node, port)
    dead_nodes: set = set()
    live_merge_input: dict = {}

    def is_dead(ref: str) -> bool:
        name, port, control = parse_input(ref)
        return name in dead_nodes or (not control and (name, port) in dead_tensors)

    ordered, cyclic = execution_order(graph_def)
    for node in ordered + cyclic:  # nodes on a loop's cycle: in file order
        if node.op in MERGES:
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


def _scalar(test):
    """A Const test: a one-element value (shape [] or [1], so broadcasting keeps the shape) passing `test`."""
    return lambda value: value.size == 1 and value.ndim <= 1 and bool(test(value.reshape(())))


def _whole(value) -> bool:
    return bool(np.all(value == np.floor(value)))


RANDOM_UNIFORM = op("RandomUniform")  # values in [0, 1)
DROPOUT_MASKS = [  # (mask pattern, its value when it keeps every element)
    (op("Floor", op("Add|AddV2", RANDOM_UNIFORM, const("keep", where=_whole))),  # TF1 nn.dropout
     lambda m: m.values["keep"].astype(np.float32)),
    (op("GreaterEqual", RANDOM_UNIFORM, const("rate", where=lambda v: bool(np.all(v <= 0)))),  # TF2 nn.dropout
     lambda m: np.ones(m.values["rate"].shape, dtype=bool)),
]


@graph_pass
def remove_inference_dropout(graph_def, ctx) -> str:
    """Dropout with keep probability 1 keeps every value: its random mask becomes a constant.

        Floor(AddV2(keep_prob=1.0, RandomUniform))    =>  Const 1.0     (TF1 nn.dropout)
        GreaterEqual(RandomUniform, rate=0.0)         =>  Const True    (TF2 nn.dropout)
    u in [0, 1) makes both exact; `bypass_neutral_arithmetic` then drops the x * 1 it leaves.
    """
    nodes = node_map(graph_def)
    replaced = 0
    for node in graph_def.node:
        for mask, kept in DROPOUT_MASKS:
            m = match(mask, nodes, node.name)
            if m is not None:
                node.CopyFrom(make_const(None, node.name, kept(m)))
                replaced += 1
                break
    return f"replaced {replaced} dropout masks by constants"


X = tensor("x")
ONE, ZERO = const(where=_scalar(lambda v: v == 1)), const(where=_scalar(lambda v: v == 0))
NEUTRAL = either(  # each passes x through unchanged
    op("Mul", X, ONE),
    op("RealDiv|Div", X, ONE),
    op("Add|AddV2|Sub", X, ZERO),
    op("SelectV2", const(where=_scalar(bool)), X, const(where=_scalar(lambda v: True))),  # scalar: no broadcast
    op("Select", const(where=_scalar(bool)), X, tensor()),
)


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
        m = match(NEUTRAL, nodes, node.name) if node.name not in protected else None
        if m is not None:
            mapping[node.name] = m["x"]
    rewire(graph_def, mapping)
    return f"bypassed {len(mapping)} neutral operations"
