"""The freeze pipeline: a list of pass names, run in order on a copy of the model's graph."""

from __future__ import annotations

from dataclasses import dataclass, field

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.tf_env import import_tf
from facecvt.graph_ops.op_families import TRAINING_OPS
from facecvt.graph_ops.registry import PassContext, run_pipeline

# strip_unused follows every pass that leaves dead nodes behind: later passes count a node's
# consumers (a weight read twice is copied before scaling), and dead ones would count
FREEZE_PIPELINE = [
    "set_training_flags",
    "inline_functional_conds",
    "prune_dead_branches",
    "drop_control_edges",
    "replace_input",
    "strip_unused",
    "remove_identity",
    "fold_constants",
    "strip_unused",
    "remove_inference_dropout",
    "strip_unused",
    "fold_constants",
    "strip_unused",
    "bypass_neutral_arithmetic",
    "strip_unused",
    "fold_batch_norms",
    "fold_scales_into_weights",
    "merge_biases",
    "strip_unused",
    "unbake_reshape_batch",
    "strip_unused",
    "sort_topologically",
    "clear_devices",
]


@dataclass
class FreezeResult:
    frozen: FrozenGraph
    reports: list = field(default_factory=list)

    def leftovers(self) -> dict:
        return leftover_training_structure(self.frozen.graph_def)


def leftover_training_structure(graph_def) -> dict:
    left = {}
    for node in graph_def.node:
        if node.op in TRAINING_OPS:
            left[node.op] = left.get(node.op, 0) + 1
        if any(r.startswith("^") for r in node.input):
            left["control edges"] = left.get("control edges", 0) + 1
    return left


def freeze(model, *, batch: int | None = None, progress=None) -> FreezeResult:
    """Run FREEZE_PIPELINE on a copy of `model.graph_def`; the model itself is not changed."""
    graph_def = type(model.graph_def)()
    graph_def.CopyFrom(model.graph_def)
    original_batch = model.input_shape[0]
    ctx = PassContext(input_name=model.input_name, output_names=[model.output_name],
                      training_flags=dict(model.training_flags),
                      input_shape=(batch, *model.input_shape[1:]), original_batch=original_batch)
    tf = import_tf()
    try:
        reports = run_pipeline(graph_def, ctx, FREEZE_PIPELINE, progress)
    except (tf.errors.OpError, ValueError) as error:  # TensorFlow refusing to import or evaluate the graph
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FacecvtError(f"freezing {model.path} failed: TensorFlow says: {first}") from None
    left = leftover_training_structure(graph_def)
    if left:
        what = ", ".join(f"{v} {k}" for k, v in sorted(left.items()))
        raise FacecvtError(f"{model.path}: training structure left after freezing ({what}); a cond predicate "
                           f"may depend on a placeholder that is not a training flag: set it with --set NAME=VALUE")
    embedding_size = _embedding_size(graph_def, ctx)
    frozen = FrozenGraph(graph_def=graph_def, input_name=model.input_name, output_name=model.output_name,
                         input_shape=ctx.input_shape, embedding_size=embedding_size,
                         notes={"original_batch": original_batch})
    return FreezeResult(frozen=frozen, reports=reports)


def _embedding_size(graph_def, ctx) -> int:
    """The output's last dimension, from TensorFlow's shape inference (or one run if unknown)."""
    import numpy as np

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    out = graph.get_tensor_by_name(f"{ctx.output_names[0]}:0")
    if out.shape.rank == 2 and out.shape[-1] is not None:
        return int(out.shape[-1])
    shape = [ctx.input_shape[0] or 1, *ctx.input_shape[1:]]
    with tf.compat.v1.Session(graph=graph) as session:
        value = session.run(out, {f"{ctx.input_name}:0": np.zeros(shape, np.float32)})
    return int(value.reshape(value.shape[0], -1).shape[-1])
