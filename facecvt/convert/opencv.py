"""Export to OpenCV DNN: a binary .pb with the weights and a .pbtxt text graph OpenCV builds the net from.

The .pb is the clean graph after the OpenCV passes (facecvt.graph_ops.opencv_passes): still a valid
TensorFlow graph, readable alone with cv2.dnn.readNetFromTensorflow(pb). The .pbtxt follows what
OpenCV's tf_text_graph_*.py tools write, adapted to what OpenCV 5.0's importer does with it:

- no Const nodes: OpenCV takes constants from the .pb by name and refuses a Const defined in both
  files (the Const-keeping cv2.dnn.writeTextGraph output does not load next to its own .pb);
- OpenCV runs its subgraph fusions only on a binary graph, so the text graph carries them already
  fused (facecvt.graph_ops.opencv_fusions): the Square/Sum/Maximum/Rsqrt/Mul chain as one
  L2Normalize node, Keras PReLU as PReLU;
- only the attributes the importer reads (the dtype attributes T, Tshape, Tidx... are dropped).
"""

from __future__ import annotations

from pathlib import Path


from facecvt.core.frozen import FrozenGraph
from facecvt.graph_ops.graph import op_histogram, remove_nodes
from facecvt.graph_ops.opencv_fusions import TEXT_GRAPH_PIPELINE
from facecvt.graph_ops.opencv_passes import OPENCV_PIPELINE
from facecvt.graph_ops.registry import PassContext, run_pipeline


# Attributes OpenCV's TensorFlow importer reads; every other one is left out of the .pbtxt.
TEXT_GRAPH_ATTRS = frozenset({
    "data_format", "strides", "ksize", "padding", "dilations", "explicit_paddings",
    "squeeze_dims", "num_split", "begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
    "shrink_axis_mask", "keepdims", "keep_dims", "axis", "N", "alpha", "epsilon", "is_training",
    "dtype", "shape", "transpose_a", "transpose_b", "align_corners", "half_pixel_centers",
    "depth_radius", "bias", "beta", "mode", "loc_pred_transposed",
})


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, *, precision: str = "fp32", **_options) -> dict:
    """Write the OpenCV .pb to `tmp_path` and its .pbtxt to siblings['.pbtxt']; return what was done.

    Options of other targets (opset, calibration...) are ignored. The export workflow loads the .pb
    with and without the .pbtxt and requires them to agree (a mis-built text graph shows there).
    """
    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    ctx = PassContext(input_name=frozen.input_name, output_names=list(frozen.output_names),
                      input_shape=frozen.input_shape, original_batch=frozen.notes.get("original_batch"))
    reports = run_pipeline(graph_def, ctx, OPENCV_PIPELINE)
    text, text_reports = _text_graph(graph_def, ctx)
    pbtxt = Path(siblings[".pbtxt"])
    Path(tmp_path).write_bytes(graph_def.SerializeToString())
    pbtxt.write_text(_to_text(text))
    return {
        "passes": [r.as_dict() for r in reports + text_reports],
        "ops": op_histogram(graph_def),
        "text_graph_ops": op_histogram(text),
        "bytes": {"pb": Path(tmp_path).stat().st_size, "pbtxt": pbtxt.stat().st_size},
        "names": {name: name for name in (frozen.input_name, *frozen.output_names)},
        "runner_options": {"pbtxt": str(pbtxt), **_output_option(frozen)},
    }


def _output_option(frozen: FrozenGraph) -> dict:
    """OpenCV's forward() returns only the last layer: a multi-output net is run with the names."""
    return {"output_names": list(frozen.output_names)} if frozen.multi_output else {}


def text_graph(graph_def, ctx: PassContext | None = None):
    """The .pbtxt graph of an OpenCV-ready `graph_def`: fused chains, no constants, only read attributes."""
    return _text_graph(graph_def, ctx or PassContext())[0]


def _text_graph(graph_def, ctx: PassContext):
    """(text graph, reports of the fusion passes run to make it)."""
    text = type(graph_def)()
    text.CopyFrom(graph_def)
    reports = run_pipeline(text, ctx, TEXT_GRAPH_PIPELINE)
    remove_nodes(text, {n.name for n in text.node if n.op == "Const"})
    for node in text.node:
        for key in [k for k in node.attr if k not in TEXT_GRAPH_ATTRS]:
            del node.attr[key]
    return text, reports


def _to_text(graph_def) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(graph_def)
