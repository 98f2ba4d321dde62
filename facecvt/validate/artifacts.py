"""Facts read from an artifact itself: its precision, and how users open it.

A candidate's precision sets its tolerances, so it is read from the file for every backend,
never from its name: TFLite tensor types, ONNX initializer types and Q/DQ nodes, Core ML's
compute precision (the types of the ML program's weights and ops).
"""

from __future__ import annotations

from pathlib import Path

from facecvt.core.targets import target_of_backend

ONNX_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                            "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})


def artifact_precision(backend: str, path: str | Path) -> str:
    """"int8", "fp16" or "fp32": the lowest precision the artifact computes or stores weights in.

    A file that cannot be read counts as fp32 (the runner reports the real load error).
    """
    path = Path(path)
    reader = {"litert": _tflite_precision, "onnxruntime": _onnx_precision, "coreml": _coreml_precision}.get(backend)
    if reader is None or not path.exists():
        return "fp32"
    try:
        return reader(path)
    except Exception:  # noqa: BLE001 - unreadable here means "load it and see": the runner says why
        return "fp32"


def quantization_record(backend: str, path: str | Path) -> dict | None:
    """The quantisation settings an int8 artifact records (calibration digest included), if any."""
    import json

    from facecvt.core.digests import QUANT_METADATA_KEY

    path = Path(path)
    reader = {"onnxruntime": _onnx_metadata, "litert": _tflite_metadata}.get(backend)
    if reader is None or not path.is_file():
        return None
    try:
        text = reader(path, QUANT_METADATA_KEY)
    except Exception:  # noqa: BLE001 - unreadable here: the runner reports the real load error
        return None
    return json.loads(text) if text else None


def _onnx_metadata(path: Path, key: str) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == key), None)


def _tflite_metadata(path: Path, key: str) -> str | None:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == key:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    return None


def default_runner_options(backend: str, path: str | Path) -> dict:
    """Options that open `path` as users load it: OpenCV's .pb with the .pbtxt written beside it."""
    target = target_of_backend(backend)
    path = Path(path)
    if backend == "opencv" and target is not None and path.suffix == target.suffix:
        pbtxt = path.with_suffix(".pbtxt")
        if pbtxt.is_file():
            return {"pbtxt": pbtxt}
    return {}


def _tflite_precision(path: Path) -> str:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    types = {model.Subgraphs(g).Tensors(t).Type()
             for g in range(model.SubgraphsLength()) for t in range(model.Subgraphs(g).TensorsLength())}
    if types & {schema.TensorType.INT8, schema.TensorType.UINT8}:
        return "int8"
    if schema.TensorType.FLOAT16 in types:
        return "fp16"
    return "fp32"


def _onnx_precision(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(node.op_type in ONNX_QUANT_OPS for node in graph.node):
        return "int8"
    types = {init.data_type for init in graph.initializer}
    if types & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8} and any(
            node.op_type in ("DequantizeLinear", "Cast") for node in graph.node):
        return "int8"
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    return "fp32"


def _coreml_precision(path: Path) -> str:
    """fp16 when the ML program computes in float16 (coremltools' compute_precision=FLOAT16)."""
    from coremltools.proto import MIL_pb2

    from facecvt.validate.mil.program import load_spec

    spec = load_spec(path)
    if not spec.HasField("mlProgram"):
        return "fp32"
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                for output in op.outputs:
                    tensor = output.type.tensorType
                    if op.type != "cast" and tensor.dataType == MIL_pb2.DataType.FLOAT16:
                        return "fp16"
    return "fp32"
