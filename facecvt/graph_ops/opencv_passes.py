"""Graph passes that make a clean frozen graph run in OpenCV's TensorFlow importer at any batch size.

Each pass rewrites a pattern that OpenCV 5.0 mis-reads or cannot run into one it handles, and
computes what TensorFlow computes. The patterns were found by running OpenCV on small graphs
(tests/test_opencv_export.py keeps each one as a test):

- constants stored compactly (zeros or repeated values left out), which OpenCV misreads;
- a Reshape whose shape is computed (Shape -> StridedSlice -> Pack, or Shape of another tensor):
  OpenCV keeps the 4-D layout after it, so an L2-normalise that follows reduces the wrong axis
  (silently wrong embeddings), and such shapes cannot be built from a .pbtxt;
- a Reshape with the batch baked into its shape ([1, 1792]) folds a batch of N into one row;
- MatMul's transpose_b is ignored;
- FusedBatchNorm on a [N, 1, 1, C] reshape of a MatMul output (facenet's Bottleneck) is folded;
- a channel bias that does not directly follow a Conv2D/MatMul becomes OpenCV's Shift layer,
  which fails for batch > 1;
- PReLU written max(x, 0) + alpha * min(x, 0) (OpenCV has no Minimum op), or
  relu(x) + alpha * -relu(-x) as facenet's MTCNN writes it (no Neg layer);
- a softmax spelled out (max, sub, exp, sum, div, as facenet's MTCNN writes it): OpenCV's reduce
  max refuses a 2-D tensor, and a 4-D map's channel softmax runs neither spelled out nor fused;
- clips written with Minimum/Maximum, and max(x, 0) alone (no such layers; the clip fusion
  OpenCV has does not run on a .pbtxt; max(a * x, 0) is silently read as a leaky ReLU).

OpenCV 5.0 does handle these as they are: AddV2, Mean over H,W, DepthwiseConv2dNative,
ConcatV2 on axis -1, Squeeze, Pad, Relu6, a 4-D FusedBatchNorm(V3) and the
Square/Sum/Maximum/Rsqrt/Mul L2-normalise chain on a 2-D tensor.
"""

from __future__ import annotations

import math

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.tf_env import import_tf
from facecvt.graph_ops.graph import (const_value, consumers, make_const, node_map, node_name, parse_input, source,
                                     unique_name)
from facecvt.graph_ops.match import const, either, match, op, tensor
from facecvt.graph_ops.op_families import WEIGHTED
from facecvt.graph_ops.registry import graph_pass

# Run in this order: later passes match the constant shapes the first ones produce. OpenCV imports
# every node (so dead ones go) and fuses subgraphs before sorting them (so the graph ends sorted).
OPENCV_PIPELINE = [
    "remove_identity",
    "materialize_constants",
    "fold_shape_computations",
    "unbake_reshape_batch",
    "transpose_matmul_weights",
    "strip_unused",  # rewrite_channel_bias counts a producer's consumers: dead ones must be gone
    "rewrite_channel_bias",
    "prelu_to_keras_form",
    "strip_unused",  # the Maximum of a rewritten PReLU is not a lone max(x, 0) for clip_to_opencv_form
    "clip_to_opencv_form",
    "softmax_to_opencv_form",
    "strip_unused",
    "sort_topologically",
]

# Two batch sizes no real dimension uses: a shape entry that follows them is the batch.
_PROBE_BATCHES = (7919, 7927)
_FLOAT = 1  # DataType DT_FLOAT


# ---------------------------------------------------------------------------------------------
# helpers


class _Shapes:
    """Static shapes of a graph's tensors, from TensorFlow's shape inference.

    The graph is imported without its large weights (shape-only stubs), so this is quick even for
    FaceNet; small constants are kept so shape subgraphs can still be evaluated.
    """

    def __init__(self, graph_def):
        tf = import_tf()
        self.graph = tf.Graph()
        try:
            with self.graph.as_default():
                tf.import_graph_def(_without_weights(graph_def), name="")
        except (ValueError, tf.errors.OpError) as error:
            raise FacecvtError(f"the graph does not load in TensorFlow: {error}") from error

    def tensor(self, ref: str):
        name, port, _ = parse_input(ref)
        return self.graph.get_tensor_by_name(f"{name}:{port}")

    def of(self, ref: str) -> tuple | None:
        """The static shape of tensor `ref` (None for unknown dimensions), or None if the rank is unknown."""
        shape = self.tensor(ref).shape
        return None if shape.rank is None else tuple(shape.as_list())


def _without_weights(graph_def):
    """A copy of `graph_def` whose large constants keep only dtype and shape."""
    light = type(graph_def)()
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is not None and len(tensor.tensor_content) > 1024:
            stub = light.node.add(name=node.name, op="Const")
            stub.attr["dtype"].CopyFrom(node.attr["dtype"])
            stub.attr["value"].tensor.dtype = tensor.dtype
            stub.attr["value"].tensor.tensor_shape.CopyFrom(tensor.tensor_shape)
        else:
            light.node.add().CopyFrom(node)
    return light


def _attr(node, key: str, default=None):
    """The value of attribute `key`, or `default`; reading `node.attr[key]` would add it to the node."""
    if key not in node.attr:
        return default
    value = node.attr[key]
    return getattr(value, value.WhichOneof("value"))


def _const_input(nodes: dict, ref: str) -> np.ndarray | None:
    return const_value(source(nodes, ref))


def _float_const(nodes: dict, ref: str) -> np.ndarray | None:
    value = _const_input(nodes, ref)
    return value if value is not None and value.dtype == np.float32 else None


def _add_const(graph_def, base: str, value, dtype) -> str:
    return make_const(graph_def, unique_name(graph_def, base), np.asarray(value, dtype=dtype)).name


def _add_node(graph_def, base: str, op: str, inputs, **attrs):
    """Append a float op named after `base`; attrs are strings (s) or the float type T by default."""
    node = graph_def.node.add(name=unique_name(graph_def, base), op=op)
    node.input.extend(inputs)
    node.attr["T"].type = _FLOAT
    for key, value in attrs.items():
        node.attr[key].s = value.encode()
    return node


def _reset(node, op: str, inputs, **attrs) -> None:
    """Turn `node` into a float `op` on `inputs`, keeping its name so consumers need no change."""
    node.op = op
    del node.input[:]
    node.input.extend(inputs)
    node.attr.clear()
    node.attr["T"].type = _FLOAT
    for key, value in attrs.items():
        node.attr[key].s = value.encode()


def _per_example(shape: tuple | None) -> int | None:
    """Elements per batch entry of a [None, d1, d2, ...] shape, or None if not all known."""
    if not shape or shape[0] is not None or any(d is None for d in shape[1:]):
        return None
    return math.prod(shape[1:])


def _batch_shape(target: list, batch_index: int, per_example: int | None) -> list | None:
    """`target` with -1 at `batch_index` and any other -1 made explicit, or None if that is ambiguous."""
    rest = [v for i, v in enumerate(target) if i != batch_index]
    if -1 in rest:
        known = math.prod(v for v in rest if v != -1)
        if per_example is None or rest.count(-1) > 1 or known <= 0 or per_example % known:
            return None
        rest[rest.index(-1)] = per_example // known
    elif per_example is not None and math.prod(rest) != per_example:
        return None
    rest.insert(batch_index, -1)
    return rest


def _reshape_dtype(reshape) -> type:
    return np.int64 if _attr(reshape, "Tshape") == 9 else np.int32  # 9 = DT_INT64


def _names(names: list, limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# passes


@graph_pass
def materialize_constants(graph_def, ctx) -> str:
    """Constants stored compactly get every value written out.

        Const {shape [] float_val: (none)}           ->  Const {float_val: 0}
        Const {shape [512] float_val: 1}             ->  Const {tensor_content: 512 floats}

    TensorFlow may omit zeros and repeated trailing values; OpenCV reads only what is written:
    it asserts on an empty value (tf.clip_by_value's 0 bound) and takes a FusedBatchNorm scale
    without tensor_content for "no scale".
    """
    from tensorflow.python.framework import tensor_util

    expanded = []
    for node in graph_def.node:
        if node.op != "Const" or "value" not in node.attr:
            continue
        tensor = node.attr["value"].tensor
        stored = sum(len(v) for f, v in tensor.ListFields() if f.name.endswith("_val"))
        value = tensor_util.MakeNdarray(tensor)
        if tensor.tensor_content or stored >= value.size or value.dtype.kind not in "fiub":
            continue
        tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        expanded.append(node.name)
    return f"wrote out {len(expanded)} compactly stored constants" + (f": {_names(expanded)}" if expanded else "")


@graph_pass
def fold_shape_computations(graph_def, ctx) -> str:
    """A Reshape shape computed from Shape ops becomes a constant, with -1 for the batch.

        Reshape(x, Pack(StridedSlice(Shape(x), [0], [1]), -1))  ->  Reshape(x, Const [-1, 1792])
        Reshape(y, Shape(z))                                   ->  Reshape(y, Const [-1, 512])

    The shape is evaluated twice with two probe batch sizes: entries that follow the batch
    become -1, entries that stay are constants (a -1 already there is made explicit).
    """
    nodes = node_map(graph_def)
    computed = [n for n in graph_def.node
                if n.op == "Reshape" and _const_input(nodes, n.input[1]) is None]
    if not computed:
        return "no computed reshape shapes"
    shapes = _Shapes(graph_def)
    folded, left = [], []
    for reshape in computed:
        value = _evaluate_shape(shapes, reshape)
        if value is None:
            left.append(reshape.name)
            continue
        reshape.input[1] = _add_const(graph_def, f"{reshape.name}/shape", value, _reshape_dtype(reshape))
        folded.append(reshape.name)
    summary = f"folded {len(folded)} computed reshape shapes into constants"
    return summary + (f"; left {_names(left)} (shape depends on more than the batch)" if left else "")


def _evaluate_shape(shapes: _Shapes, reshape) -> list | None:
    """The constant shape `reshape` computes, with -1 for the batch; None if it is not one."""
    tf = import_tf()
    target = shapes.tensor(reshape.input[1])
    runs = []
    with tf.compat.v1.Session(graph=shapes.graph) as session:
        for batch in _PROBE_BATCHES:
            feeds = _shape_feeds(target, batch)
            if feeds is None:
                return None
            try:
                runs.append(session.run(target, feeds).tolist())
            except tf.errors.OpError:  # the shape reads tensor values, not just shapes
                return None
    if not isinstance(runs[0], list):
        return None
    batch_at = [i for i, pair in enumerate(zip(*runs)) if pair == _PROBE_BATCHES]
    if any(a != b for i, (a, b) in enumerate(zip(*runs)) if i not in batch_at) or len(batch_at) > 1:
        return None
    if not batch_at:
        return runs[0]
    return _batch_shape(runs[0], batch_at[0], _per_example(shapes.of(reshape.input[0])))


def _shape_feeds(tensor, batch: int) -> dict | None:
    """Feed every Shape op `tensor` depends on with its static shape, the batch set to `batch`."""
    feeds, stack, seen = {}, [tensor.op], set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type != "Shape":
            stack.extend(t.op for t in op.inputs)
            continue
        dims = op.inputs[0].shape
        if dims.rank is None or None in dims.as_list()[1:]:
            return None
        value = [batch if d is None else d for d in dims.as_list()]
        feeds[op.outputs[0]] = np.array(value, dtype=op.outputs[0].dtype.as_numpy_dtype)
    return feeds


@graph_pass
def unbake_reshape_batch(graph_def, ctx) -> str:
    """A Reshape constant with the batch baked in gets -1 for the batch.

        Reshape(x: [?, 1, 1, 1792], Const [1, -1])  ->  Reshape(x, Const [-1, 1792])
        Reshape(y: [?, 1, 1, 512],  Const [1, 512]) ->  Reshape(y, Const [-1, 512])

    Only where the reshaped tensor has a dynamic batch and the shape starts with the batch the
    graph was frozen at (ctx.original_batch, 1 by default, as in the classic recipe).
    """
    baked = ctx.original_batch or 1
    unbaked = []
    while True:  # each fix makes the batch dynamic further down the graph
        nodes, shapes = node_map(graph_def), _Shapes(graph_def)
        changed = []
        for reshape in [n for n in graph_def.node if n.op == "Reshape"]:
            value = _const_input(nodes, reshape.input[1])
            source_shape = shapes.of(reshape.input[0])
            if value is None or value.ndim != 1 or not value.size or int(value[0]) != baked:
                continue
            if not source_shape or source_shape[0] is not None:
                continue
            new = _batch_shape([int(v) for v in value], 0, _per_example(source_shape))
            if new is not None:
                reshape.input[1] = _add_const(graph_def, f"{reshape.name}/shape", new, _reshape_dtype(reshape))
                changed.append(reshape.name)
        if not changed:
            break
        unbaked += changed
    return f"made the batch dynamic in {len(unbaked)} reshapes" + (f": {_names(unbaked)}" if unbaked else "")


@graph_pass
def transpose_matmul_weights(graph_def, ctx) -> str:
    """MatMul with transpose_b reads the transposed constant instead (OpenCV ignores transpose_b).

        MatMul(x, Const W[out, in], transpose_b=True)  ->  MatMul(x, Const W.T[in, out])
    """
    nodes = node_map(graph_def)
    done = []
    for node in graph_def.node:
        weights = _float_const(nodes, node.input[1]) if node.op == "MatMul" else None
        if weights is None or not _attr(node, "transpose_b", False) or _attr(node, "transpose_a", False):
            continue
        node.input[1] = _add_const(graph_def, f"{node_name(node.input[1])}/transposed", weights.T, np.float32)
        node.attr["transpose_b"].b = False
        done.append(node.name)
    return f"transposed the weights of {len(done)} MatMuls"


def _float(test):
    """A Const test: float32 and `test(value)`."""
    return lambda value: value.dtype == np.float32 and bool(test(value))


X = tensor("x")
FLOAT_ZERO = const(where=_float(lambda v: v.size == 1 and float(v.reshape(())) == 0.0))
CHANNEL_BIAS = op("BiasAdd|Add|AddV2|Sub", X, const("bias", where=_float(lambda v: _per_channel(v))))
CHANNEL_SCALE = op("Mul", tensor(), const(where=_float(lambda v: _per_channel(v))))


@graph_pass
def rewrite_channel_bias(graph_def, ctx) -> str:
    """A per-channel constant bias takes the form OpenCV fuses, never its Shift layer.

        Add/AddV2/BiasAdd(Conv2D|MatMul(..), c[C])  ->  BiasAdd(Conv2D|MatMul(..), c)   (fused)
        Sub(Conv2D|MatMul(..), c[C])                ->  BiasAdd(Conv2D|MatMul(..), -c)
        Add/AddV2/BiasAdd/Sub(x, c[C]), x other     ->  Add(Mul(x, ones[C]), ±c)         (Scale layer)
        AddV2(Mul(x, s[C]), c[C])                   ->  Add(Mul(x, s), c)                (Scale layer)

    OpenCV turns a channel bias it cannot fuse into a Shift layer, which fails for batch > 1;
    x * 1 + c equals x + c exactly.
    """
    nodes, users = node_map(graph_def), consumers(graph_def)
    shapes = None
    fused, scaled = [], []
    for node in list(graph_def.node):
        match = _match_channel_bias(nodes, node)
        if match is None:
            continue
        x_ref, bias = match
        shapes = shapes or _Shapes(graph_def)
        x_shape = shapes.of(x_ref)
        if not x_shape or len(x_shape) < 2 or x_shape[-1] != bias.size:
            continue
        x_node = source(nodes, x_ref)
        if x_node.op in WEIGHTED and len(users[x_node.name]) == 1:
            if node.op != "BiasAdd":
                bias_ref = _add_const(graph_def, f"{node.name}/bias", bias, np.float32)
                _reset(node, "BiasAdd", [x_ref, bias_ref], data_format="NHWC")
                fused.append(node.name)
        elif _is_scale_with_bias(nodes, users, x_node, node):
            if node.op != "Add":
                node.op = "Add"  # same op as AddV2; only "Add" is fused into the Scale from a .pbtxt
                scaled.append(node.name)
        else:
            bias_ref = _add_const(graph_def, f"{node.name}/bias", bias, np.float32)
            ones = _add_const(graph_def, f"{node.name}/one", np.ones(bias.size), np.float32)
            scale = _add_node(graph_def, f"{node.name}/scale_by_one", "Mul", [x_ref, ones])
            _reset(node, "Add", [scale.name, bias_ref])  # "AddV2" is not fused from a .pbtxt
            scaled.append(node.name)
    return (f"made {len(fused)} biases fusable BiasAdds and {len(scaled)} scale-and-bias pairs"
            + (f": {_names(fused + scaled)}" if fused or scaled else ""))


def _match_channel_bias(nodes: dict, node):
    """(x, bias as it is added) when `node` adds a per-channel float constant to x, else None."""
    if node.op == "BiasAdd" and _attr(node, "data_format", b"NHWC") != b"NHWC":
        return None
    m = match(CHANNEL_BIAS, nodes, node.name, where=lambda m: source(nodes, m["x"]) is not None
              and source(nodes, m["x"]).op != "Const")
    if m is None:
        return None
    bias = m.values["bias"]
    return m["x"], (-bias if node.op == "Sub" else bias).reshape(-1)


def _per_channel(value: np.ndarray) -> bool:
    """True for a [C] or [1, ..., 1, C] constant with C > 1."""
    return value.size > 1 and value.shape == (1,) * (value.ndim - 1) + (value.size,)


def _is_scale_with_bias(nodes: dict, users: dict, x_node, add) -> bool:
    """True for Add(Mul(x, const vector), c), which OpenCV already fuses into one Scale layer."""
    if add.op not in ("Add", "AddV2") or len(users[x_node.name]) != 1:
        return False
    return match(CHANNEL_SCALE, nodes, x_node.name) is not None


SLOPE = const("alpha", where=_float(lambda v: v.size == 1 or _per_channel(v)))
NEGATIVE_RELU = op("Relu", op("Neg", X))  # relu(-x) = -min(x, 0)
PRELU_FORMS = [  # (form named in the summary, pattern, sign that makes the matched constant alpha)
    ("Minimum", op("Add|AddV2", either(op("Relu", X), op("Maximum", X, FLOAT_ZERO)),
                   op("Mul", SLOPE, op("Minimum", X, FLOAT_ZERO))), 1),
    ("Keras", op("Add|AddV2", op("Relu", X), op("Mul", SLOPE, NEGATIVE_RELU)), -1),  # -alpha folded by freeze
    ("Keras", op("Sub", op("Relu", X), op("Mul", SLOPE, NEGATIVE_RELU)), 1),
    ("negated", op("Add|AddV2", op("Relu", X), op("Mul", SLOPE, op("Neg", NEGATIVE_RELU))), 1),  # facenet's MTCNN
]


@graph_pass
def prelu_to_keras_form(graph_def, ctx) -> str:
    """PReLUs take the Keras form OpenCV fuses into its PReLU layer, with alpha as a constant.

        AddV2(Maximum(x, 0) | Relu(x), Mul(alpha, Minimum(x, 0)))
        AddV2(Relu(x), Mul(c, Relu(Neg(x))))           (c = -alpha, folded by the freezer)
        Sub(Relu(x), Mul(alpha, Relu(Neg(x))))
        AddV2(Relu(x), Mul(alpha, Neg(Relu(Neg(x)))))  (facenet's MTCNN)
        ->  AddV2(Relu(x), Mul(Neg(alpha), Relu(Neg(x))))   alpha shaped [1, ..., 1, C] as Keras keeps it

    Exact: -alpha * relu(-x) is alpha * min(x, 0) with both signs flipped, -(-c) is c,
    a - b is a + (-b) and alpha * -r is -alpha * r. Operands match in either order.
    The result keeps alpha itself in the .pb, which the .pbtxt's fused PReLU node reads. The TFLite
    converter fuses the same form into one PRELU op (int8 too: one requantisation instead of four,
    and no float NEG between int8 ops), but only when alpha has the input's rank less the batch
    ([1, 1, C] on NHWC, [C] on a 2-D tensor), as Keras stores it (TFLITE_PIPELINE).
    """
    nodes = node_map(graph_def)
    shapes = None
    done = {form: [] for form, _, _ in PRELU_FORMS}
    for add in [n for n in graph_def.node if n.op in ("Add", "AddV2", "Sub")]:
        for form, pattern, sign in PRELU_FORMS:
            m = match(pattern, nodes, add.name)
            if m is None:
                continue
            shapes = shapes or _Shapes(graph_def)
            alpha = _keras_alpha(sign * m.values["alpha"], len(shapes.of(m["x"]) or ()))
            alpha_ref = _add_const(graph_def, f"{add.name}/alpha", alpha, np.float32)
            positive = _add_node(graph_def, f"{add.name}/positive", "Relu", [m["x"]])
            negated = _add_node(graph_def, f"{add.name}/negated", "Neg", [m["x"]])
            negative = _add_node(graph_def, f"{add.name}/negative", "Relu", [negated.name])
            neg_alpha = _add_node(graph_def, f"{add.name}/neg_alpha", "Neg", [alpha_ref])
            scaled = _add_node(graph_def, f"{add.name}/scaled", "Mul", [neg_alpha.name, negative.name])
            _reset(add, "AddV2", [positive.name, scaled.name])
            done[form].append(add.name)
            break
    names = [name for names in done.values() for name in names]
    return (f"rewrote {len(done['Minimum'])} Minimum PReLUs, kept alpha in {len(done['Keras'])} Keras PReLUs, "
            f"rewrote {len(done['negated'])} relu(x) + alpha * -relu(-x) PReLUs"
            + (f": {_names(names)}" if names else ""))


def _keras_alpha(alpha: np.ndarray, rank: int) -> np.ndarray:
    """A PReLU's slopes as Keras shapes them for an input of `rank`: [1, ..., 1, C] (rank - 1 dims), a
    scalar for one shared slope; [C] when the rank is unknown."""
    if alpha.size == 1:
        return alpha.reshape(())
    return alpha.reshape((1,) * max(rank - 2, 0) + (-1,))


LOW = const("low", where=_float(lambda v: v.size == 1))
HIGH = const("high", where=_float(lambda v: v.size == 1))
CLIP = either(  # x between low and high (0 for a Relu), checked low <= high when matched
    op("Minimum", op("Maximum", X, LOW), HIGH),
    op("Maximum", op("Minimum", X, HIGH), LOW),
    op("Minimum", op("Relu", X), HIGH),
)
MAX_ZERO = op("Maximum", X, FLOAT_ZERO)


@graph_pass
def clip_to_opencv_form(graph_def, ctx) -> str:
    """Clips written with Minimum/Maximum become ClipByValue; a lone max(x, 0) becomes Relu.

        Minimum(Maximum(x, lo), hi) | Maximum(Minimum(x, hi), lo)  ->  ClipByValue(x, lo, hi)   (lo <= hi)
        Minimum(Relu(x), hi)                                       ->  ClipByValue(x, 0, hi)    (0 <= hi)
        Maximum(x, 0)                                              ->  Relu(x)

    OpenCV has no standalone Minimum/Maximum with a constant. It fuses max(min(x, hi), lo) only
    when reading a binary graph, not from a .pbtxt; ClipByValue (its ReLU6 layer) works in both.
    It also takes Maximum(Mul(x, a), 0) for a leaky ReLU of slope a: silently wrong, unlike Relu.
    """
    nodes = node_map(graph_def)
    clips = []
    for node in [n for n in graph_def.node if n.op in ("Minimum", "Maximum")]:
        m = match(CLIP, nodes, node.name, where=lambda m: _bounds(m)[0] <= _bounds(m)[1])
        if m is not None:
            low, high = _bounds(m)
            low_ref = _add_const(graph_def, f"{node.name}/low", low, np.float32)
            high_ref = _add_const(graph_def, f"{node.name}/high", high, np.float32)
            _reset(node, "ClipByValue", [m["x"], low_ref, high_ref])
            clips.append(node.name)
    used = set(consumers(graph_def)) | set(ctx.output_names)  # not the inner halves of the clips just made
    relus = []
    for node in [n for n in graph_def.node if n.op == "Maximum" and n.name in used]:
        m = match(MAX_ZERO, nodes, node.name)
        if m is not None:
            _reset(node, "Relu", [m["x"]])
            relus.append(node.name)
    return f"made {len(clips)} clips ClipByValue and {len(relus)} max(x, 0) Relu"


def _bounds(m) -> tuple:
    """(low, high) scalars of a matched CLIP."""
    return float(m.values.get("low", 0.0)), float(m.values["high"])


SPELLED_SOFTMAX = op("RealDiv|Div", op("Exp", op("Sub", X, op("Max", X, const("max_axis"))), name="exp"),
                     op("Sum", tensor("summed"), const("sum_axis")))


@graph_pass
def softmax_to_opencv_form(graph_def, ctx) -> str:
    """A softmax spelled out over the last axis takes a form OpenCV runs.

        RealDiv(e, Sum(e, axis)),  e = Exp(Sub(x, Max(x, axis)))
        ->  Softmax(x)                                     (2-D x)
        ->  RealDiv(Exp(x), Conv2D(Exp(x), ones[1,1,C,C]))  (4-D NHWC x, over the C channels)

    OpenCV's reduce max refuses a 2-D tensor, and on a 4-D map it runs neither the chain nor a
    fused Softmax over the channels (Softmax normalises along W of its NCHW blob: measured); a 1x1
    convolution with all-ones weights is the channel sum, repeated on every channel. The 4-D form
    drops the max subtraction: equal up to rounding while the logits stay below exp's float32 limit
    (88), which a detector's two-class logits do.
    """
    nodes = node_map(graph_def)
    shapes = None
    done = []
    for div in [n for n in graph_def.node if n.op in ("RealDiv", "Div")]:
        m = match(SPELLED_SOFTMAX, nodes, div.name)
        if m is None or node_name(m["summed"]) != m.nodes["exp"].name:
            continue
        shapes = shapes or _Shapes(graph_def)
        shape = shapes.of(m["x"]) or ()
        rank = len(shape)
        axes = {int(a) % rank if rank else int(a) for key in ("max_axis", "sum_axis")
                for a in np.asarray(m.values[key]).reshape(-1)}
        if not rank or axes != {rank - 1} or rank not in (2, 4) or (rank == 4 and shape[3] is None):
            continue
        if rank == 2:
            _reset(div, "Softmax", [m["x"]])
        else:
            channels = int(shape[3])
            exp = _add_node(graph_def, f"{div.name}/exp", "Exp", [m["x"]])
            ones = _add_const(graph_def, f"{div.name}/ones", np.ones((1, 1, channels, channels)), np.float32)
            total = _add_node(graph_def, f"{div.name}/channel_sum", "Conv2D", [exp.name, ones],
                              padding="VALID", data_format="NHWC")
            total.attr["strides"].list.i.extend([1, 1, 1, 1])
            _reset(div, "RealDiv", [exp.name, total.name])
        done.append(div.name)
    return f"rewrote {len(done)} spelled-out softmaxes" + (f": {_names(done)}" if done else "")
