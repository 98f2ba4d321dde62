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
- PReLU written max(x, 0) + alpha * min(x, 0) (OpenCV has no Minimum op);
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
from facecvt.graph_ops.graph import (ancestors, const_value, consumers, make_const, node_map, node_name,
                                     parse_input, remove_nodes, replace_uses, sort_by_execution_order, unique_name)
from facecvt.graph_ops.registry import graph_pass
from facecvt.core.tf_env import import_tf

# Run in this order: later passes match the constant shapes the first ones produce.
OPENCV_PIPELINE = [
    "remove_identity",
    "materialize_constants",
    "fold_shape_computations",
    "unbake_reshape_batch",
    "transpose_matmul_weights",
    "rewrite_channel_bias",
    "prelu_to_keras_form",
    "clip_to_opencv_form",
]

# Two batch sizes no real dimension uses: a shape entry that follows them is the batch.
_PROBE_BATCHES = (7919, 7927)
_BIAS_FUSING_PRODUCERS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
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


def _same_tensor(ref_a: str, ref_b: str) -> bool:
    return parse_input(ref_a)[:2] == parse_input(ref_b)[:2]


def _source(nodes: dict, ref: str):
    """The node that produces `ref`, looking through Identity nodes."""
    node = nodes.get(node_name(ref))
    while node is not None and node.op == "Identity" and node.input:
        node = nodes.get(node_name(node.input[0]))
    return node


def _const_input(nodes: dict, ref: str) -> np.ndarray | None:
    return const_value(_source(nodes, ref))


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


def _prune(graph_def, ctx) -> int:
    """Remove every node the outputs do not depend on (OpenCV imports them all) and put the rest in
    execution order (OpenCV fuses subgraphs before sorting, and misses some out of order); returns
    how many nodes were removed."""
    names = {n.name for n in graph_def.node}
    missing = [name for name in ctx.output_names if name not in names]
    if missing:
        raise FacecvtError(f"output node {missing[0]!r} is not in the graph; pass the right --output")
    keep = ancestors(graph_def, [*ctx.output_names, ctx.input_name])
    dead = names - keep
    remove_nodes(graph_def, dead)
    sort_by_execution_order(graph_def)
    return len(dead)


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
    _prune(graph_def, ctx)
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
    _prune(graph_def, ctx)
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
    _prune(graph_def, ctx)
    return f"transposed the weights of {len(done)} MatMuls"


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
        x_node = _source(nodes, x_ref)
        if x_node.op in _BIAS_FUSING_PRODUCERS and len(users[x_node.name]) == 1:
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
    _prune(graph_def, ctx)
    return (f"made {len(fused)} biases fusable BiasAdds and {len(scaled)} scale-and-bias pairs"
            + (f": {_names(fused + scaled)}" if fused or scaled else ""))


def _match_channel_bias(nodes: dict, node):
    """(x, bias as it is added) when `node` adds a per-channel float constant to x, else None."""
    if node.op not in ("BiasAdd", "Add", "AddV2", "Sub") or len(node.input) != 2:
        return None
    if node.op == "BiasAdd" and _attr(node, "data_format", b"NHWC") != b"NHWC":
        return None
    operands = [(node.input[0], node.input[1])]
    if node.op in ("Add", "AddV2"):
        operands.append((node.input[1], node.input[0]))
    for x_ref, c_ref in operands:
        bias, x_node = _float_const(nodes, c_ref), _source(nodes, x_ref)
        if bias is None or x_node is None or x_node.op == "Const" or not _per_channel(bias):
            continue
        return x_ref, (-bias if node.op == "Sub" else bias).reshape(-1)
    return None


def _per_channel(value: np.ndarray) -> bool:
    """True for a [C] or [1, ..., 1, C] constant with C > 1."""
    return value.size > 1 and value.shape == (1,) * (value.ndim - 1) + (value.size,)


def _is_scale_with_bias(nodes: dict, users: dict, x_node, add) -> bool:
    """True for Add(Mul(x, const vector), c), which OpenCV already fuses into one Scale layer."""
    if add.op not in ("Add", "AddV2") or x_node.op != "Mul" or len(users[x_node.name]) != 1:
        return False
    return any(_per_channel(v) for v in (_float_const(nodes, r) for r in x_node.input) if v is not None)


@graph_pass
def prelu_to_keras_form(graph_def, ctx) -> str:
    """PReLUs take the Keras form OpenCV fuses into its PReLU layer, with alpha as a constant.

        AddV2(Maximum(x, 0) | Relu(x), Mul(alpha, Minimum(x, 0)))
        ->  AddV2(Relu(x), Mul(Neg(alpha), Relu(Neg(x))))
        AddV2(Relu(x), Mul(c, Relu(Neg(x))))      (c = -alpha, folded by the freezer)
        ->  AddV2(Relu(x), Mul(Neg(-c), Relu(Neg(x))))
        Sub(Relu(x), Mul(alpha, Relu(Neg(x))))
        ->  AddV2(Relu(x), Mul(Neg(alpha), Relu(Neg(x))))

    Exact: -alpha * relu(-x) is alpha * min(x, 0) with both signs flipped, -(-c) is c, and
    a - b is a + (-b).
    The second form keeps alpha itself in the .pb, which the .pbtxt's fused PReLU node reads.
    """
    nodes = node_map(graph_def)
    rewritten, normalised = [], []
    for add in [n for n in graph_def.node if n.op in ("Add", "AddV2", "Sub") and len(n.input) == 2]:
        match = _match_prelu(nodes, add) if add.op != "Sub" else None
        if match is not None:
            x_ref, alpha = match
            alpha_ref = _add_const(graph_def, f"{add.name}/alpha", alpha, np.float32)
            positive = _add_node(graph_def, f"{add.name}/positive", "Relu", [x_ref])
            negated = _add_node(graph_def, f"{add.name}/negated", "Neg", [x_ref])
            negative = _add_node(graph_def, f"{add.name}/negative", "Relu", [negated.name])
            neg_alpha = _add_node(graph_def, f"{add.name}/neg_alpha", "Neg", [alpha_ref])
            scaled = _add_node(graph_def, f"{add.name}/scaled", "Mul", [neg_alpha.name, negative.name])
            _reset(add, "AddV2", [positive.name, scaled.name])
            rewritten.append(add.name)
            continue
        folded = _match_folded_alpha(nodes, add)
        if folded is not None:
            positive_ref, negative_ref, factor = folded  # factor = -alpha for Add, alpha for Sub
            alpha = factor if add.op == "Sub" else -factor
            alpha_ref = _add_const(graph_def, f"{add.name}/alpha", alpha, np.float32)
            neg_alpha = _add_node(graph_def, f"{add.name}/neg_alpha", "Neg", [alpha_ref])
            scaled = _add_node(graph_def, f"{add.name}/scaled", "Mul", [neg_alpha.name, negative_ref])
            _reset(add, "AddV2", [positive_ref, scaled.name])
            normalised.append(add.name)
    _prune(graph_def, ctx)
    done = rewritten + normalised
    return (f"rewrote {len(rewritten)} Minimum PReLUs, kept alpha in {len(normalised)} Keras PReLUs"
            + (f": {_names(done)}" if done else ""))


def _match_folded_alpha(nodes: dict, add):
    """(Relu(x), Relu(Neg(x)), c) refs and value when `add` is Relu(x) +|- Mul(Const c, Relu(Neg(x)))."""
    orders = [(add.input[0], add.input[1])]
    if add.op != "Sub":
        orders.append((add.input[1], add.input[0]))
    for relu_ref, mul_ref in orders:
        relu, mul = _source(nodes, relu_ref), _source(nodes, mul_ref)
        if relu is None or relu.op != "Relu" or mul is None or mul.op != "Mul":
            continue
        for c_ref, negative_ref in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            folded, negative = _float_const(nodes, c_ref), _source(nodes, negative_ref)
            if folded is None or negative is None or negative.op != "Relu":
                continue
            negated = _source(nodes, negative.input[0])
            if negated is not None and negated.op == "Neg" and _same_tensor(negated.input[0], relu.input[0]):
                return relu_ref, negative_ref, folded
    return None


def _match_prelu(nodes: dict, add):
    """(x, alpha) when `add` is max(x, 0) + alpha * min(x, 0) in any operand order, else None."""
    for pos_ref, mul_ref in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
        x_pos = _clamp_at_zero(nodes, pos_ref, ("Maximum",))
        mul = _source(nodes, mul_ref)
        if x_pos is None or mul is None or mul.op != "Mul":
            continue
        for alpha_ref, min_ref in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            alpha = _float_const(nodes, alpha_ref)
            if alpha is None or not (alpha.size == 1 or _per_channel(alpha)):
                continue
            x_neg = _clamp_at_zero(nodes, min_ref, ("Minimum",))
            if x_neg is not None and _same_tensor(x_neg, x_pos):
                return x_pos, alpha.reshape(-1) if alpha.size > 1 else alpha.reshape(())
    return None


def _clamp_at_zero(nodes: dict, ref: str, ops: tuple) -> str | None:
    """x when `ref` is op(x, 0) for an op in `ops` (or Relu(x) for Maximum), else None."""
    node = _source(nodes, ref)
    if node is None:
        return None
    if node.op == "Relu" and "Maximum" in ops:
        return node.input[0]
    if node.op not in ops or len(node.input) != 2:
        return None
    for x_ref, zero_ref in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        zero = _float_const(nodes, zero_ref)
        if zero is not None and zero.size == 1 and float(zero.reshape(())) == 0.0:
            return x_ref
    return None


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
    for node in list(graph_def.node):
        match = _match_clip(nodes, node) if node.op in ("Minimum", "Maximum") else None
        if match is not None:
            x_ref, low, high = match
            low_ref = _add_const(graph_def, f"{node.name}/low", low, np.float32)
            high_ref = _add_const(graph_def, f"{node.name}/high", high, np.float32)
            _reset(node, "ClipByValue", [x_ref, low_ref, high_ref])
            clips.append(node.name)
    _prune(graph_def, ctx)
    nodes = node_map(graph_def)
    relus = []
    for node in [n for n in graph_def.node if n.op == "Maximum"]:
        x_ref = _clamp_at_zero(nodes, node.name, ("Maximum",))
        if x_ref is not None:
            _reset(node, "Relu", [x_ref])
            relus.append(node.name)
    return f"made {len(clips)} clips ClipByValue and {len(relus)} max(x, 0) Relu"


def _match_clip(nodes: dict, outer):
    """(x, lo, hi) when `outer` clips x between scalar constants lo <= hi, else None."""
    inner_op = "Maximum" if outer.op == "Minimum" else "Minimum"
    for inner_ref, bound_ref in ((outer.input[0], outer.input[1]), (outer.input[1], outer.input[0])):
        bound, inner = _float_const(nodes, bound_ref), _source(nodes, inner_ref)
        if bound is None or bound.size != 1 or inner is None:
            continue
        bound = bound.reshape(())
        if inner.op == "Relu" and outer.op == "Minimum" and bound >= 0:
            return inner.input[0], np.float32(0), bound
        if inner.op != inner_op or len(inner.input) != 2:
            continue
        for x_ref, other_ref in ((inner.input[0], inner.input[1]), (inner.input[1], inner.input[0])):
            other = _float_const(nodes, other_ref)
            if other is None or other.size != 1:
                continue
            low, high = (other.reshape(()), bound) if outer.op == "Minimum" else (bound, other.reshape(()))
            if low <= high:
                return x_ref, low, high
    return None
