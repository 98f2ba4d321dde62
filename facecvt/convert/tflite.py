"""TFLite/LiteRT export with the TFLite converter: fp32, fp16 weights, or full-integer int8."""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from facecvt.convert.calibration import first_images
from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.tf_env import import_tf
from facecvt.graph_ops.pipeline import TFLITE_PIPELINE
from facecvt.graph_ops.registry import PassContext, run_pipeline


# ops that carry the network's multiply-accumulates: in an int8 model they must all run in int8
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}
WORST_LAYERS = 20    # layers of the int8 error account kept in the details
ACCOUNT_IMAGES = 16  # calibration images the error account runs on (SQNR settles well before)


def representative_dataset(calibration, frozen: FrozenGraph):
    """A converter dataset callable yielding one [1, H, W, C] float32 sample at a time.

    `calibration` is an iterable of NHWC float32 batches (N, H, W, C) or single images (H, W, C),
    already preprocessed like the model's inputs. It is read once, lazily, by the converter.
    """
    expected = tuple(frozen.input_shape[1:])

    def samples():
        count = 0
        for item in calibration:
            batch = np.asarray(item, dtype=np.float32)
            batch = batch[None] if batch.ndim == 3 else batch
            if batch.ndim != 4 or any(e is not None and e != got for e, got in zip(expected, batch.shape[1:])):
                raise FacecvtError(f"calibration data has shape {batch.shape}; the model takes "
                                   f"(N, {', '.join('?' if e is None else str(e) for e in expected)}) "
                                   f"preprocessed images")
            for image in batch:
                count += 1
                yield [image[None]]
        if count == 0:
            raise FacecvtError("the calibration set is empty; pass --calibration DIR with face images")

    return samples


def graph_converter(frozen: FrozenGraph):
    """The TFLite converter of the frozen GraphDef itself (the TF1 API; -1 marks a free dimension).

    The TF2 route (a concrete function wrapping the graph) makes the converter run TensorFlow's
    graph optimizers and freeze the function again first: on the released FaceNet 8.1 s and 2.8 GB
    peak against 3.0 s and 1.5 GB here, for the same flatbuffer. The graph is already frozen and folded.
    """
    tf = import_tf()
    shape = [-1 if size is None else int(size) for size in frozen.input_shape]
    return tf.compat.v1.lite.TFLiteConverter(frozen.graph_def, None, None,
                                              input_arrays_with_shape=[(frozen.input_name, shape)],
                                              output_arrays=list(frozen.output_names))


def configure(converter, precision: str, calibration, frozen: FrozenGraph) -> None:
    """Set the converter options of one precision (fp32 is the converter's default)."""
    tf = import_tf()
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration, frozen)
        # int8 builtins only: the converter fails on any op it cannot quantise instead of
        # silently leaving it in float
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32


def _converter_message(exc: Exception, frozen: FrozenGraph) -> str:
    """The converter's own error lines, plus the GraphDef nodes of every TF op they name.

    The converter locates errors by Python call site (the graph is imported from a GraphDef),
    so the node names are looked up from the op types it names ('tf.Erfinv' -> the Erfinv nodes).
    """
    errors = [line.split("error:", 1)[1].strip() for line in str(exc).splitlines() if "error:" in line]
    errors = [e for e in dict.fromkeys(errors) if not e.startswith("failed while converting")] or errors
    message = "; ".join(errors[:3]) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    op_types = set(re.findall(r"'tf\.(\w+)'", message))
    nodes = [node.name for node in frozen.graph_def.node if node.op in op_types]
    if nodes:
        message += f" (node {', '.join(nodes[:5])}); replace that op in the model"
    return message


def model_summary(flatbuffer: bytes) -> dict:
    """Op counts of the main subgraph and the compute ops whose input is not int8.

    Returns {"ops": {OP_NAME: count}, "float_compute_ops": [OP_NAME, ...]}.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    subgraph = model.Subgraphs(0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    ops, float_compute = Counter(), []
    for i in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(i)
        code = codes[operator.OpcodeIndex()]
        # builtin codes above 127 live in BuiltinCode; DeprecatedBuiltinCode holds the small ones
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ops[name] += 1
        if name in COMPUTE_OPS and subgraph.Tensors(operator.Inputs(0)).Type() != schema.TensorType.INT8:
            float_compute.append(name)
    return {"ops": dict(ops.most_common()), "float_compute_ops": float_compute}


def record_metadata(flatbuffer: bytes, key: str, text: str) -> bytes:
    """The model with a metadata entry `key` holding `text` (LiteRT ignores metadata it does not know)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = key.encode(), len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _quantization_record(calibration) -> dict:
    """What an int8 .tflite records: how it was quantised and a digest of the calibration images."""
    record = {"format": "TFLite full-integer", "activation_type": "int8", "weight_type": "int8",
              "per_channel": True, "calibration_method": "minmax (TFLite converter)"}
    if hasattr(calibration, "digest"):
        digest = calibration.digest()
        record.update(calibration_images=digest["count"], calibration_sha256=digest["sha256"],
                      calibration_files=digest["files"], calibration_plan=calibration.describe())
    return record


def _convert(converter, precision: str, frozen: FrozenGraph) -> bytes:
    try:
        with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": we keep float I/O
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except FacecvtError:
        raise
    except Exception as exc:
        raise FacecvtError(f"the TFLite converter failed ({precision}): {_converter_message(exc, frozen)}") from exc


def _batches(calibration):
    """`calibration`'s items as float32 NHWC batches (single images get a batch dimension)."""
    for item in calibration:
        batch = np.asarray(item, dtype=np.float32)
        yield batch[None] if batch.ndim == 3 else batch


def _error_account(frozen: FrozenGraph, int8_path: Path, calibration, probe) -> dict:
    """The int8 model's worst layers by SQNR against an fp32 conversion, on the calibration images."""
    import tempfile

    fp32 = _convert(graph_converter(frozen), "fp32", frozen)
    with tempfile.TemporaryDirectory(prefix="facecvt-tflite-") as work:
        fp32_path = Path(work) / "fp32.tflite"
        fp32_path.write_bytes(fp32)
        report = probe.tflite_layer_report(fp32_path, int8_path, first_images(_batches(calibration), ACCOUNT_IMAGES))
    from facecvt.core.console import err

    err.print("int8 layers with the largest quantisation error:\n" + probe.worst_layers_text(report))
    return {"worst_layers": report["layers"][:WORST_LAYERS]}


def _tensor_names(flatbuffer: bytes) -> set:
    from ai_edge_litert import schema_py_generated as schema

    subgraph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)
    return {subgraph.Tensors(i).Name().decode() for i in range(subgraph.TensorsLength())}


def _int8_keeping_float(converter, frozen: FrozenGraph, keep_float) -> bytes:
    """Full-integer int8 except the ops whose output tensors are named in `keep_float` (left in float).

    As TensorFlow's quantization debugger does: calibrate only, then quantise the calibrated
    model with those nodes on the deny list.
    """
    from tensorflow.lite.python import convert as tflite_convert

    converter._experimental_calibrate_only = True  # noqa: SLF001 - the debugger's documented route
    calibrated = _convert(converter, "int8", frozen)
    names = _tensor_names(calibrated)
    # the int8 model's output op is named NAME1 (its DEQUANTIZE took NAME); the calibrated one's NAME
    keep_float = [n[:-1] if n not in names and n.endswith("1") and n[:-1] in names else n for n in keep_float]
    unknown = sorted(set(keep_float) - names)
    if unknown:
        raise FacecvtError(f"--keep-float names no op output of this model: {', '.join(unknown[:3])}; use the "
                           "tensor names the int8 error account prints (worst_layers[].layer)")
    try:
        return tflite_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                            denylisted_nodes=list(keep_float))
    except Exception as exc:
        raise FacecvtError(f"the TFLite quantiser failed keeping {', '.join(keep_float)} in float: "
                           f"{_converter_message(exc, frozen)}") from exc


def prepared_graph(frozen: FrozenGraph) -> tuple:
    """(a copy of `frozen` after TFLITE_PIPELINE, the passes' reports): the graph the converter takes."""
    from dataclasses import replace

    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    ctx = PassContext(input_name=frozen.input_name, output_names=list(frozen.output_names),
                      input_shape=frozen.input_shape)
    reports = run_pipeline(graph_def, ctx, TFLITE_PIPELINE)
    return replace(frozen, graph_def=graph_def), reports


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, precision: str = "fp32",
          calibration=None, probe=None, keep_float=()) -> dict:
    """Convert `frozen` to a .tflite at `tmp_path`; returns {"precision", "ops", "size_bytes"}.

    fp16 stores float16 weights; int8 quantises every op to int8 (float input and output kept)
    with ranges from `calibration` (an iterable of preprocessed NHWC float32 batches), records how
    in the model's metadata and, given `probe` (validate/quant_report, injected by the export
    workflow), adds the worst layers by SQNR to the details.
    """
    from facecvt.core.digests import QUANT_METADATA_KEY

    if precision == "int8" and calibration is None:
        raise FacecvtError("int8 quantisation needs calibration images: pass --calibration DIR "
                           "(a folder of face crops like the ones the model will see)")
    frozen, reports = prepared_graph(frozen)
    converter = graph_converter(frozen)
    configure(converter, precision, calibration, frozen)
    if keep_float and precision != "int8":
        raise FacecvtError("--keep-float applies to int8 exports only")
    if keep_float:
        flatbuffer = _int8_keeping_float(converter, frozen, keep_float)
    else:
        flatbuffer = _convert(converter, precision, frozen)
    summary = model_summary(flatbuffer)
    if precision == "int8" and summary["float_compute_ops"] and not keep_float:
        raise FacecvtError("int8 conversion left float compute ops "
                           f"({', '.join(sorted(set(summary['float_compute_ops'])))}); the model is not full-integer")
    details = {"precision": precision, "ops": summary["ops"], "passes": [r.as_dict() for r in reports]}
    if precision == "int8":
        details["quantization"] = {**_quantization_record(calibration), "keep_float": list(keep_float)}
        flatbuffer = record_metadata(flatbuffer, QUANT_METADATA_KEY, json.dumps(details["quantization"]))
    Path(tmp_path).write_bytes(flatbuffer)
    if precision == "int8" and probe is not None:
        details["quantization"].update(_error_account(frozen, Path(tmp_path), calibration, probe))
    # the converter keeps the graph's tensor names (LiteRT lists outputs in its own order: match by name)
    return {**details, "size_bytes": len(flatbuffer),
            "names": {name: name for name in (frozen.input_name, *frozen.output_names)}}
