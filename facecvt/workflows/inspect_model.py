"""What `facecvt inspect` reports: signature, ops, training structure and the freeze plan."""

from __future__ import annotations

from facecvt.graph_ops.fold import is_inference_batch_norm
from facecvt.graph_ops.graph import op_histogram
from facecvt.core.model import Model, describe_training_structure, tensor_signatures, unfrozen_variables_message


def inference_batch_norms(graph_def) -> int:
    """How many FusedBatchNorms freeze folds: those in inference mode, in the graph or a function (a TF2
    cond branch). A cond holds a batch norm twice, once per branch; the training branch's one is dropped."""
    functions = [node for function in graph_def.library.function for node in function.node_def]
    return sum(map(is_inference_batch_norm, [*graph_def.node, *functions]))


def freeze_plan(model: Model, structure: dict) -> list:
    """One line per piece of training structure: what `freeze` will do about it."""
    if model.unfrozen_variables:
        return [f"refuse: {unfrozen_variables_message(model.path, model.unfrozen_variables)}"]
    plan = []
    for name, value in model.training_flags.items():
        plan.append(f"set training flag {name} to {value}")
    if structure["switch"] or structure["merge"]:
        plan.append(f"prune the dead branch of v1 conds ({structure['switch']} Switch, {structure['merge']} Merge)")
    if structure["if"]:
        plan.append(f"inline the taken branch of {structure['if']} If/StatelessIf")
    if structure["moving_average_updates"]:
        plan.append(f"drop {structure['moving_average_updates']} moving-average updates (training branch)")
    if structure["random_ops"]:
        plan.append(f"drop {structure['random_ops']} random ops (dropout in the training branch)")
    folded = inference_batch_norms(model.graph_def)
    if folded:
        plan.append(f"fold {folded} inference batch norms (FusedBatchNorm) into the preceding conv/matmul"
                    + (f"; the other {structure['fused_batch_norm'] - folded} are in training branches"
                       if structure["fused_batch_norm"] > folded else ""))
    if structure["queues"]:
        plan.append(f"replace the queue-fed input {model.input_name!r} with a Placeholder")
    if model.input_shape[0] is not None:
        plan.append(f"make the batch dynamic (the input is fixed at batch {model.input_shape[0]})")
    if model.extra_outputs:
        plan.append(f"drop extra outputs: {', '.join(model.extra_outputs)}")
    if structure["control_edges"]:
        plan.append(f"remove {structure['control_edges']} control edges")
    return plan or ["nothing: the graph is already a clean inference graph"]


def inspect_model(model: Model) -> dict:
    structure = describe_training_structure(model.graph_def)
    nodes = model.nodes
    dtype_name = lambda node: "float32" if node.attr["dtype"].type in (0, 1) else str(node.attr["dtype"].type)  # noqa: E731
    return {
        "path": str(model.path),
        "kind": model.kind,
        "loader": model.loader,
        "found": model.found,
        "unfrozen_variables": len(model.unfrozen_variables),
        "nodes": len(model.graph_def.node),
        "inputs": [{"name": model.input_name, "op": nodes[model.input_name].op,
                    "shape": list(model.input_shape), "dtype": "float32"}],
        "outputs": [{"name": name, "op": nodes[name].op, "shape": shape, "dtype": dtype}
                    for name, (shape, dtype) in tensor_signatures(model.graph_def, model.output_names).items()],
        "found_outputs": [*model.output_names, *model.extra_outputs],
        "training_flags": [{"name": k, "op": nodes[k].op, "inference_value": v,
                            "dtype": "bool" if nodes[k].attr["dtype"].type == 10 else dtype_name(nodes[k])}
                           for k, v in model.training_flags.items()],
        "extra_outputs": model.extra_outputs,
        "other_placeholders": [n.name for n in model.graph_def.node
                               if n.op == "Placeholder" and n.name != model.input_name
                               and n.name not in model.training_flags],
        "training_structure": structure,
        "ops": op_histogram(model.graph_def),
        "freeze_plan": freeze_plan(model, structure),
    }


def render_inspect(report: dict, console) -> None:
    """The `inspect` report as lines a person reads top to bottom."""
    console.print(f"[bold]{report['path']}[/] ({report['kind']}, {report['nodes']} nodes)")
    console.print(f"  read by {report['loader']}")
    if report["unfrozen_variables"]:
        console.print(f"  [bold red]{report['unfrozen_variables']} variables were never frozen[/]: this .pb is not a "
                      f"frozen graph; convert its checkpoint folder (.meta, .index, .data-*) instead")
    for key, value in report["found"].items():
        console.print(f"  {key.replace('_', ' ')}: {value}")
    for item in report["inputs"]:
        console.print(f"  input   {item['name']}  {item['op']}  shape {item['shape']}  {item['dtype']}")
    for item in report["outputs"]:
        shape = "?" if item["shape"] is None else item["shape"]
        console.print(f"  output  {item['name']}  {item['op']}  shape {shape}  {item['dtype']}  (kept)")
    for item in report["training_flags"]:
        console.print(f"  flag    {item['name']}  {item['op']} {item['dtype']} -> {item['inference_value']}")
    if report["extra_outputs"]:
        console.print(f"  extra outputs (dropped; keep them with --output): {', '.join(report['extra_outputs'])}")
    structure = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["training_structure"].items() if v)
    console.print(f"training structure: {structure or 'none'}")
    console.print("ops: " + ", ".join(f"{op} {n}" for op, n in report["ops"].items()))
    console.print("freeze will:")
    for line in report["freeze_plan"]:
        console.print(f"  - {line}")
