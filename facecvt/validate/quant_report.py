"""Where an int8 ONNX model loses accuracy: SQNR per quantised tensor and per layer, float vs QDQ.

After onnxruntime's `quantization.qdq_loss_debug` (its activation and weight matching), written
small: the float model (the one that was quantised) is run with every quantised activation as an
output, the QDQ model with every DequantizeLinear output (so its real fused int8 kernels run), on
the calibration images. Per tensor:

- `quant_sqnr_db`: the float activation against its own fake-quantisation with the model's scale
  and zero point (or the float weight against its dequantised weight): the error this one
  quantisation adds. A bad scale shows here, in the tensor that has it.
- `model_sqnr_db`: the float activation against the int8 model's at the same point: the error
  accumulated up to there, including what the int8 kernels do (saturation shows here).

A layer (a node fed by DequantizeLinear) gets the lowest `quant_sqnr_db` of what it quantises
itself: its weights and its output; ops that only move values (reshape, pooling by max...) are
left out, their tensors share their producer's quantisation. Layers are ranked worst first. SQNR = 10 log10(sum f^2 / sum (f - q)^2) over all images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RENAMED_OUTPUT = "_QuantizeLinear_Input"
MAX_SQNR_DB = 200.0  # what an exact match reports (JSON has no infinity)
# ops that only move or select values: their output's quantisation is their input's
DATA_MOVEMENT = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Concat",
                           "Slice", "Gather", "Split", "Identity"})


def sqnr_db(signal_power: float, noise_power: float) -> float:
    if noise_power <= 0:
        return MAX_SQNR_DB
    if signal_power <= 0:
        return -MAX_SQNR_DB
    return float(min(MAX_SQNR_DB, 10 * np.log10(signal_power / noise_power)))


def _initializers(model) -> dict:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _fake_quant(x: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """x quantised with (scale, zero_point) of zero_point's int type, then dequantised."""
    info = np.iinfo(np.asarray(zero_point).dtype)
    scale, zero = np.asarray(scale, np.float32), np.asarray(zero_point, np.float32)
    if scale.ndim == 1 and axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    q = np.clip(np.round(x / scale) + zero, info.min, info.max)
    return ((q - zero) * scale).astype(np.float32)


class QdqModel:
    """The Q/DQ structure of a QDQ ONNX model: quantised activations, weights, and the layers they feed."""

    def __init__(self, path: str | Path):
        import onnx

        self.model = onnx.load(str(path))
        graph = self.model.graph
        self.inits = _initializers(self.model)
        producers = {out: node for node in graph.node for out in node.output}
        self.activations = {}  # float tensor -> (DQ output, scale, zero point)
        self.weights = {}      # DQ output -> (float weight name, dequantised weight)
        self.dq_source = {}    # DQ output -> float tensor (activation) or weight name
        for node in graph.node:
            if node.op_type != "DequantizeLinear":
                continue
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            source, scale_name, zero_name = (list(node.input) + [None])[:3]
            scale = self.inits.get(scale_name)
            zero = self.inits.get(zero_name) if zero_name else np.zeros((), np.uint8)
            if source in self.inits:  # a weight stored quantised
                float_name = source[: -len("_quantized")] if source.endswith("_quantized") else source
                self.weights[node.output[0]] = (float_name, _fake_dequant(self.inits[source], scale, zero, axis))
                self.dq_source[node.output[0]] = float_name
                continue
            quantize = producers.get(source)
            if quantize is not None and quantize.op_type == "QuantizeLinear" and scale is not None:
                # a graph output keeps its name on the last DequantizeLinear; the tensor it
                # quantises was renamed NAME_QuantizeLinear_Input
                float_tensor = quantize.input[0].removesuffix(RENAMED_OUTPUT)
                self.activations[float_tensor] = (node.output[0], scale, zero)
                self.dq_source[node.output[0]] = float_tensor
        self.layers = [node for node in graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
                       and any(i in self.dq_source for i in node.input)]


def _fake_dequant(q: np.ndarray, scale, zero, axis: int) -> np.ndarray:
    scale, zero = np.asarray(scale, np.float32), np.asarray(zero, np.float32)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def _session_with_outputs(model, names):
    """An onnxruntime CPU session of `model` that also returns the tensors `names`."""
    import copy

    import onnx
    import onnxruntime

    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def layer_report(float_path: str | Path, qdq_path: str | Path, batches) -> dict:
    """{"tensors": [...], "layers": [...] worst first} for the QDQ model against its float model.

    `batches` is an iterable of preprocessed NHWC float32 batches (the calibration images).
    """
    import onnx

    qdq = QdqModel(qdq_path)
    float_model = onnx.load(str(float_path))
    float_inits = _initializers(float_model)
    activations = [t for t in qdq.activations if t not in float_inits]
    float_session = _session_with_outputs(float_model, activations)
    qdq_session = _session_with_outputs(qdq.model, [qdq.activations[t][0] for t in activations])
    input_name = float_session.get_inputs()[0].name
    power = {t: np.zeros(3) for t in activations}  # signal, quantisation noise, model noise
    for batch in batches:
        floats = dict(zip([o.name for o in float_session.get_outputs()],
                          float_session.run(None, {input_name: batch})))
        quants = dict(zip([o.name for o in qdq_session.get_outputs()],
                          qdq_session.run(None, {input_name: batch})))
        for tensor in activations:
            dq_name, scale, zero = qdq.activations[tensor]
            f = floats[tensor].astype(np.float64)
            power[tensor] += (np.sum(f * f), np.sum((f - _fake_quant(floats[tensor], scale, zero)) ** 2),
                              np.sum((f - quants[dq_name]) ** 2))
    tensors = {t: {"tensor": t, "kind": "activation", "quant_sqnr_db": sqnr_db(p[0], p[1]),
                   "model_sqnr_db": sqnr_db(p[0], p[2])} for t, p in power.items()}
    for dq_name, (weight, dequantised) in qdq.weights.items():
        if weight in float_inits and float_inits[weight].shape == dequantised.shape:
            w = float_inits[weight].astype(np.float64)
            tensors[weight] = {"tensor": weight, "kind": "weight",
                               "quant_sqnr_db": sqnr_db(np.sum(w * w), np.sum((w - dequantised) ** 2))}
    layers = []
    for node in qdq.layers:
        if node.op_type in DATA_MOVEMENT:
            continue
        weights = [tensors[qdq.dq_source[i]] for i in node.input
                   if i in qdq.weights and qdq.dq_source[i] in tensors]
        output = tensors.get(node.output[0].removesuffix(RENAMED_OUTPUT))
        own = weights + ([output] if output else [])
        if not own:
            continue
        worst = min(own, key=lambda t: t["quant_sqnr_db"])
        layers.append({"layer": node.name, "op": node.op_type, "sqnr_db": worst["quant_sqnr_db"],
                       "worst_tensor": worst["tensor"], "worst_tensor_kind": worst["kind"],
                       "output_model_sqnr_db": output.get("model_sqnr_db") if output else None})
    layers.sort(key=lambda layer: layer["sqnr_db"])
    return {"tensors": sorted(tensors.values(), key=lambda t: t["quant_sqnr_db"]), "layers": layers}


def worst_layers_text(report: dict, count: int = 10) -> str:
    """The `count` worst layers as a small table, one line each."""
    lines = [f"{'layer':<48} {'op':<10} {'SQNR dB':>8}  {'model SQNR dB at output':>24}  worst tensor"]
    for layer in report["layers"][:count]:
        model = layer["output_model_sqnr_db"]
        lines.append(f"{layer['layer'][:48]:<48} {layer['op']:<10} {layer['sqnr_db']:>8.1f}  "
                     f"{'' if model is None else f'{model:.1f}':>24}  {layer['worst_tensor_kind']} {layer['worst_tensor']}")
    return "\n".join(lines)


def min_cosine(float_path: str | Path, qdq_path: str | Path, batches) -> float:
    """The lowest cosine similarity of the two models' outputs over `batches` (held-out images)."""
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (float_path, qdq_path)]
    name = sessions[0].get_inputs()[0].name
    worst = 1.0
    for batch in batches:
        a, b = (s.run(None, {name: batch})[0] for s in sessions)
        cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst = min(worst, float(np.min(cosine)))
    return worst


def latency_ms(path: str | Path, sample: np.ndarray, repeats: int = 10) -> float:
    """Median latency of one run on `sample` (after two warm-up runs), in milliseconds."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: sample}
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


# -- TFLite: the int8 model against the fp32 one, op by op (their op output tensors share names) ---------

TFLITE_DATA_MOVEMENT = frozenset({"RESHAPE", "MAX_POOL_2D", "CONCATENATION", "SHAPE", "STRIDED_SLICE", "PACK"})


def _litert_tensors(path, batch):
    """{output tensor name: (value as stored, quantisation (scales, zero points, axis), op, weight)} of every op.

    Run on LiteRT's builtin kernels with every tensor kept (a delegate would hide its intermediates).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], batch)
    interpreter.invoke()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DELEGATE" or not len(op["outputs"]):
            continue
        out = tensors[int(op["outputs"][0])]
        weight = None
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) > 1:
            w = tensors[int(op["inputs"][1])]
            weight = (interpreter.get_tensor(w["index"]), w["quantization_parameters"])
        found[out["name"]] = (interpreter.get_tensor(out["index"]), out["quantization_parameters"], op["op_name"],
                              weight)
    return found


def _dequantize(value, params) -> np.ndarray:
    if value.dtype not in (np.int8, np.uint8, np.int16, np.int32) or not len(params["scales"]):
        return value.astype(np.float32)
    scale, zero = params["scales"].astype(np.float32), params["zero_points"].astype(np.float32)
    if scale.size > 1:
        shape = [1] * value.ndim
        shape[params["quantized_dimension"]] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


def tflite_layer_report(float_path: str | Path, int8_path: str | Path, batches) -> dict:
    """{"layers": [...] worst first}: per int8 op, SQNR of its weights and output against the fp32 model.

    `quant_sqnr_db` of an output is the fp32 model's tensor against its fake-quantisation with the
    int8 tensor's scale (the error that quantisation adds); `model_sqnr_db` against the int8
    model's dequantised tensor (the error accumulated up to there).
    """
    power, kinds, weights = {}, {}, {}
    for batch in batches:
        floats, quants = _litert_tensors(float_path, batch), _litert_tensors(int8_path, batch)
        for name, (value, params, op, weight) in quants.items():
            if name not in floats or value.dtype != np.int8 or op in ("QUANTIZE", "DEQUANTIZE"):
                continue
            f = floats[name][0].astype(np.float64)
            if f.shape != value.shape:
                continue
            own = _fake_quant(floats[name][0], params["scales"][0], params["zero_points"][0].astype(np.int8))
            power.setdefault(name, np.zeros(3))
            power[name] += (np.sum(f * f), np.sum((f - own) ** 2), np.sum((f - _dequantize(value, params)) ** 2))
            kinds[name] = op
            float_weight = floats[name][3]
            if weight is not None and float_weight is not None and name not in weights:
                w = float_weight[0].astype(np.float64)
                if w.shape == weight[0].shape:
                    weights[name] = sqnr_db(np.sum(w * w), np.sum((w - _dequantize(*weight)) ** 2))
    layers = []
    for name, p in power.items():
        if kinds[name] in TFLITE_DATA_MOVEMENT:
            continue
        output, model = sqnr_db(p[0], p[1]), sqnr_db(p[0], p[2])
        weight = weights.get(name)
        worst_kind = "weight" if weight is not None and weight < output else "activation"
        # a fused op's tensor is named after every TF op folded into it (the first is the one to read);
        # the whole name is what --keep-float takes
        layers.append({"layer": name, "op": kinds[name], "sqnr_db": min(output, weight or MAX_SQNR_DB),
                       "worst_tensor": name, "worst_tensor_kind": worst_kind, "output_model_sqnr_db": model})
    layers.sort(key=lambda layer: layer["sqnr_db"])
    return {"layers": layers}
