"""ONNX export with tf2onnx: plain tensor names, a symbolic batch dimension, NHWC or NCHW input."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.tf_env import import_tf
from facecvt.convert.tf2onnx_memory import convert_bounded


LAYOUTS = ("nhwc", "nchw")
BATCH_DIM = "N"  # dim_param of the batch dimension of the input and the output
SIZE_DIMS = ("H", "W")  # dim_params of a free input height and width


def _tf2onnx():
    """The tf2onnx package, imported after TensorFlow's logging is turned down (it imports TF)."""
    import_tf()
    import tf2onnx

    return tf2onnx


def tf2onnx_max_opset() -> int:
    """The newest ONNX opset tf2onnx can emit (the last entry of its opset -> IR version table)."""
    return max(_tf2onnx().constants.OPSET_TO_IR_VERSION)


@functools.lru_cache(maxsize=None)
def onnxruntime_runs_opset(opset: int) -> bool:
    """Whether the installed onnxruntime loads a model of this default-domain opset."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    constants = _tf2onnx().constants
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=constants.OPSET_TO_IR_VERSION.get(opset, onnx.IR_VERSION))
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime refuses opsets it does not know with a plain RuntimeError/Fail
        return False
    return True


@functools.lru_cache(maxsize=None)
def default_opset() -> int:
    """The newest opset that both tf2onnx emits and the installed onnxruntime runs."""
    for opset in range(tf2onnx_max_opset(), 0, -1):
        if onnxruntime_runs_opset(opset):
            return opset
    raise FacecvtError("the installed onnxruntime runs none of the opsets tf2onnx emits; reinstall facecvt")


def check_opset(opset: int) -> int:
    """Validate a user-chosen opset against what tf2onnx emits and onnxruntime runs."""
    newest = tf2onnx_max_opset()
    if not isinstance(opset, int) or not 7 <= opset <= newest:
        raise FacecvtError(f"--opset {opset} is not supported: tf2onnx emits opsets 7 to {newest}; "
                           f"leave --opset out to use {default_opset()}")
    if not onnxruntime_runs_opset(opset):
        raise FacecvtError(f"--opset {opset} is not run by the installed onnxruntime; "
                           f"leave --opset out to use {default_opset()}")
    return opset


class _ErrorRecords(logging.Handler):
    """Collects the ERROR records tf2onnx logs (it logs unconvertible ops and keeps going)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().splitlines()[0])


@contextlib.contextmanager
def _tf2onnx_errors():
    """Silence tf2onnx's INFO/WARNING chatter and yield the error messages it logs meanwhile."""
    logger = logging.getLogger("tf2onnx")
    handler, level, propagate = _ErrorRecords(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _unknown_ops(model) -> list:
    """'node (OpType)' for every node that is not an ONNX operator (a TF op tf2onnx left behind)."""
    import onnx

    return [f"{node.name} ({node.op_type})" for node in model.graph.node
            if not onnx.defs.has(node.op_type, node.domain)]


def _convert(frozen: FrozenGraph, opset: int, layout: str):
    """tf2onnx conversion of the clean graph, tensors renamed to the graph's plain names."""
    tf2onnx = _tf2onnx()
    input_ref = f"{frozen.input_name}:0"
    output_refs = {f"{name}:0": name for name in frozen.output_names}
    with _tf2onnx_errors() as errors:
        try:
            model, _ = convert_bounded(lambda: tf2onnx.convert.from_graph_def(
                frozen.graph_def, name=frozen.output_name, input_names=[input_ref], output_names=list(output_refs),
                opset=opset, inputs_as_nchw=[input_ref] if layout == "nchw" else None,
                tensors_to_rename={input_ref: frozen.input_name, **output_refs}))
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FacecvtError(f"tf2onnx failed: {first_line}") from exc
    unknown = _unknown_ops(model)
    if errors or unknown:
        named = f" at {', '.join(unknown[:5])}" if unknown else ""
        message = errors[0] if errors else "ops left unconverted"
        raise FacecvtError(f"tf2onnx cannot convert the graph (opset {opset}){named}: {message}; "
                           "replace that op in the model or try another --opset")
    return model


def _set_symbolic_dims(model, layout: str) -> None:
    """Name the free dimensions: the batch `N` of the input and every output, and a free input
    height and width `H`, `W` (a fully convolutional model)."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for index, label in zip((2, 3) if layout == "nchw" else (1, 2), SIZE_DIMS):
                if not dims[index].HasField("dim_value"):
                    dims[index].dim_param = label


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, opset: int | None = None,
          layout: str = "nhwc", precision: str = "fp32", calibration=None, **int8_options) -> dict:
    """Convert `frozen` to ONNX at `tmp_path`; returns {"opset", "layout", "ops", "ir_version"}.

    `layout="nchw"` makes the model input NCHW (tf2onnx pushes the transpose into the first conv);
    the output stays (N, D). `opset=None` picks `default_opset()`. `precision="int8"` quantises the
    fp32 model with `calibration` (convert/onnx_int8.py, which takes `int8_options`) and adds
    its settings and error account to the details.
    """
    import onnx

    from facecvt.convert import onnx_int8

    if layout not in LAYOUTS:
        raise FacecvtError(f"unknown ONNX layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if precision == "int8":
        onnx_int8.check_request(calibration, **int8_options)
    elif int8_options or calibration is not None:  # a caller's mistake, not the user's: fail loudly
        raise TypeError(f"int8 options given for a {precision} ONNX export: {sorted(int8_options)}")
    opset = default_opset() if opset is None else check_opset(opset)
    model = _convert(frozen, opset, layout)
    _set_symbolic_dims(model, layout)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise FacecvtError(f"tf2onnx wrote an invalid ONNX model: {str(exc).splitlines()[0]}") from exc
    details = {"opset": opset, "layout": layout, "ir_version": model.ir_version}
    if precision == "int8":
        details["quantization"] = onnx_int8.write_int8(model, tmp_path, calibration, frozen.input_name,
                                                       **int8_options)
        model = onnx.load(str(tmp_path), load_external_data=False)
    else:
        onnx.save_model(model, str(tmp_path))
    return {**details, "precision": precision,
            "names": {name: name for name in (frozen.input_name, *frozen.output_names)},
            "ops": dict(Counter(node.op_type for node in model.graph.node).most_common())}
