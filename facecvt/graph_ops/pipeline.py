"""The freeze pipeline: a list of pass names, run in order on a copy of the model's graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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


# Run by the TFLite exporter on the clean graph: PReLUs in the form the TFLite converter fuses into
# its PRELU op (facenet's MTCNN writes relu(x) + alpha * -relu(-x), which it leaves as five ops with
# a float NEG among them: an int8 model then requantises four times per PReLU and is not full-integer).
TFLITE_PIPELINE = [
    "prelu_to_keras_form",
    "strip_unused",
    "sort_topologically",
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
    ctx = PassContext(input_name=model.input_name, output_names=list(model.output_names),
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
    shapes = output_shapes(graph_def, ctx.input_name, ctx.input_shape, ctx.output_names)
    first = shapes[ctx.output_names[0]]
    frozen = FrozenGraph(graph_def=graph_def, input_name=model.input_name, output_names=tuple(ctx.output_names),
                         input_shape=ctx.input_shape, embedding_size=_flat_size(first),
                         output_shapes=shapes, notes={"original_batch": original_batch})
    return FreezeResult(frozen=frozen, reports=reports)


def output_shapes(graph_def, input_name: str, input_shape: tuple, output_names) -> dict:
    """{output: shape} from TensorFlow's shape inference, None for a dimension that depends on the
    batch or on a free input size; a fixed-size input with a dimension still unknown is run once."""
    import numpy as np

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    tensors = [graph.get_tensor_by_name(f"{name}:0") for name in output_names]
    shapes = [None if t.shape.rank is None else tuple(t.shape.as_list()) for t in tensors]
    if all(s is not None and None not in s[1:] for s in shapes) or None in input_shape[1:]:
        return {name: shape for name, shape in zip(output_names, shapes)}
    feed = np.zeros([input_shape[0] or 1, *input_shape[1:]], np.float32)
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(tensors, {f"{input_name}:0": feed})
    return {name: (None if input_shape[0] is None else v.shape[0], *v.shape[1:])
            for name, v in zip(output_names, values)}


def _flat_size(shape) -> int | None:
    """Values per input of an output of `shape` (the embedding size), None when not fixed."""
    if shape is None or any(d is None for d in shape[1:]):
        return None
    return int(np.prod(shape[1:], dtype=np.int64))
