"""Each graph pass on a small graph built for it: the pattern in, the rewrite out, same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.graph_ops import cleanup, fold, training  # noqa: F401
from facecvt.graph_ops.graph import node_map
from facecvt.graph_ops.registry import PASSES, PassContext
from facecvt.core.tf_env import import_tf

from conftest import run_graph

tf = import_tf()


def graph_of(build):
    graph = tf.Graph()
    with graph.as_default():
        build()
    return graph.as_graph_def()


def assert_same(after, before, rel=1e-6):
    """Equal up to float32 rounding: max |diff| within `rel` of the largest magnitude."""
    assert np.abs(after - before).max() <= rel * max(1.0, np.abs(before).max())


def ops(graph_def) -> list:
    return [n.op for n in graph_def.node]


def copy(graph_def):
    new = type(graph_def)()
    new.CopyFrom(graph_def)
    return new


def reverse_order(graph_def) -> None:
    """List the nodes users first, as an inlined function body or a hand-written GraphDef may."""
    nodes = list(graph_def.node)
    del graph_def.node[:]
    graph_def.node.extend(reversed(nodes))


def v1_cond_graph(merge_false_first: bool):
    """x -> Switch(pred) -> (false: x*2, true: x*3) -> Merge, with the Merge inputs in either order."""
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        pred = tf.compat.v1.placeholder(tf.bool, [], name="phase_train")
        f, t = tf.raw_ops.Switch(data=x, pred=pred, name="sw")
        low = tf.multiply(f, 2.0, name="false_branch")
        high = tf.multiply(t, 3.0, name="true_branch")
        inputs = [low, high] if merge_false_first else [high, low]
        tf.identity(tf.raw_ops.Merge(inputs=inputs, name="merge")[0], name="embeddings")
    return graph_of(build)


@pytest.mark.parametrize("merge_false_first", [True, False])
@pytest.mark.parametrize("flag", [False, True])
def test_prune_dead_branches_keeps_the_branch_the_predicate_selects(flag, merge_false_first):
    graph_def = v1_cond_graph(merge_false_first)
    ctx = PassContext(training_flags={"phase_train": flag})
    PASSES["set_training_flags"](graph_def, ctx)
    summary = PASSES["prune_dead_branches"](graph_def, ctx)
    assert "Switch" not in ops(graph_def) and "Merge" not in ops(graph_def)
    names = node_map(graph_def)
    assert ("true_branch" in names) == flag and ("false_branch" in names) != flag
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.allclose(run_graph(graph_def, x), x * (3.0 if flag else 2.0))
    assert "1 constant conds" in summary


def test_prune_dead_branches_leaves_a_placeholder_predicate_alone():
    graph_def = v1_cond_graph(True)
    summary = PASSES["prune_dead_branches"](graph_def, PassContext())
    assert ops(graph_def).count("Switch") == 1 and "0 constant conds" in summary


def test_inline_functional_conds_inlines_the_taken_branch():
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="input"),
                                  tf.TensorSpec([], tf.bool, name="training")])
    def f(x, training):
        y = tf.cond(training, lambda: x * 5.0, lambda: tf.cond(x[0, 0] > -1e9, lambda: x - 1.0, lambda: x))
        return tf.identity(y, name="embeddings")

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph_def = convert_variables_to_constants_v2(f.get_concrete_function(),
                                                  lower_control_flow=False).graph.as_graph_def()
    assert {"StatelessIf"} & set(ops(graph_def))
    x = np.ones((2, 3), np.float32)
    ctx = PassContext(training_flags={"training": False})
    PASSES["set_training_flags"](graph_def, ctx)
    summary = PASSES["inline_functional_conds"](graph_def, ctx)
    assert "inlined 1" in summary and "1 left" in summary  # the inner cond reads x: not constant
    assert np.allclose(run_graph(graph_def, x), x - 1.0)


def conv_bn_graph(kind: str, bn_op: str = "FusedBatchNormV3"):
    rng = np.random.default_rng(0)

    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 4], name="input")
        if kind == "conv":
            y = tf.nn.conv2d(x, rng.normal(size=(3, 3, 4, 6)).astype(np.float32), 1, "SAME")
        elif kind == "depthwise":
            y = tf.nn.depthwise_conv2d(x, rng.normal(size=(3, 3, 4, 2)).astype(np.float32), [1, 1, 1, 1], "SAME")
        else:
            y = tf.reshape(tf.linalg.matmul(tf.reshape(x, [-1, 256]), rng.normal(size=(256, 6)).astype(np.float32)),
                           [-1, 1, 1, 6])
        c = int(y.shape[-1])
        params = [rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.2, 3, c)]
        op = getattr(tf.raw_ops, bn_op)
        y = op(x=y, scale=params[0].astype(np.float32), offset=params[1].astype(np.float32),
               mean=params[2].astype(np.float32), variance=params[3].astype(np.float32),
               epsilon=1e-3, is_training=False)[0]
        tf.identity(y, name="embeddings")
    return graph_of(build)


@pytest.mark.parametrize("kind", ["conv", "depthwise", "matmul"])
@pytest.mark.parametrize("bn_op", ["FusedBatchNorm", "FusedBatchNormV3"])
def test_fold_batch_norms_into_the_weighted_op(kind, bn_op):
    graph_def = conv_bn_graph(kind, bn_op)
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 4)).astype(np.float32)
    before = run_graph(graph_def, x)
    summary = PASSES["fold_batch_norms"](graph_def, PassContext())
    PASSES["strip_unused"](graph_def, PassContext())
    assert not {"FusedBatchNorm", "FusedBatchNormV3", "Mul"} & set(ops(graph_def))
    assert "folded 1 batch norms into weights" in summary
    assert_same(run_graph(graph_def, x), before)


def test_fold_batch_norms_without_a_weighted_producer_becomes_mul_and_biasadd():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 3], name="input")
        y = tf.raw_ops.FusedBatchNorm(x=tf.nn.relu(x), scale=[1.0, 2.0, 3.0], offset=[0.1, 0.2, 0.3],
                                      mean=[0.5, 0.0, -0.5], variance=[1.0, 4.0, 0.25], is_training=False)[0]
        tf.identity(y, name="embeddings")
    graph_def = graph_of(build)
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    before = run_graph(graph_def, x)
    assert "into Mul+BiasAdd" in PASSES["fold_batch_norms"](graph_def, PassContext())
    assert "FusedBatchNorm" not in ops(graph_def)
    assert_same(run_graph(graph_def, x), before)


def unfused_bn_graph():
    rng = np.random.default_rng(3)

    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 10], name="input")
        y = tf.nn.bias_add(tf.linalg.matmul(x, rng.normal(size=(10, 5)).astype(np.float32)),
                           rng.normal(size=5).astype(np.float32))
        y = tf.nn.batch_normalization(y, rng.normal(size=5).astype(np.float32),
                                      rng.uniform(0.5, 2, 5).astype(np.float32),
                                      rng.normal(size=5).astype(np.float32),
                                      rng.uniform(0.5, 2, 5).astype(np.float32), 1e-3)
        tf.identity(y, name="embeddings")
    return graph_of(build)


def test_unfused_batch_norm_folds_into_matmul_and_one_bias():
    graph_def = unfused_bn_graph()
    x = np.random.default_rng(4).normal(size=(3, 10)).astype(np.float32)
    before = run_graph(graph_def, x)
    ctx = PassContext()
    for name in ("fold_constants", "fold_scales_into_weights", "merge_biases", "strip_unused"):
        PASSES[name](graph_def, ctx)
    assert sorted(o for o in ops(graph_def) if o not in ("Const", "Placeholder")) == ["BiasAdd", "Identity",
                                                                                       "MatMul"]
    assert_same(run_graph(graph_def, x), before)


def test_unbake_batch_makes_a_batch_one_reshape_dynamic():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [1, 2, 2, 3], name="input")
        tf.identity(tf.reshape(x, [1, 12]), name="embeddings")
    graph_def = graph_of(build)
    ctx = PassContext(input_shape=(None, 2, 2, 3), original_batch=1)
    PASSES["replace_input"](graph_def, ctx)
    assert "made the batch dynamic in 1 reshapes" in PASSES["unbake_reshape_batch"](graph_def, ctx)
    x = np.ones((5, 2, 2, 3), np.float32)
    assert run_graph(graph_def, x).shape == (5, 12)


def test_remove_identity_keeps_named_input_and_output():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="input")
        y = tf.identity(tf.stop_gradient(tf.identity(x)) * 2.0)
        tf.identity(y, name="embeddings")
    graph_def = graph_of(build)
    PASSES["remove_identity"](graph_def, PassContext())
    assert ops(graph_def).count("Identity") == 1 and node_map(graph_def)["embeddings"].op == "Identity"
    assert "StopGradient" not in ops(graph_def)


def test_drop_control_edges_and_clear_devices():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="input")
        with tf.device("/device:CPU:0"), tf.control_dependencies([x]):
            tf.identity(tf.constant(1.0) + x, name="embeddings")
    graph_def = graph_of(build)
    PASSES["drop_control_edges"](graph_def, PassContext())
    PASSES["clear_devices"](graph_def, PassContext())
    assert not any(r.startswith("^") for n in graph_def.node for r in n.input)
    assert not any(n.device for n in graph_def.node)


def test_fold_constants_folds_a_subgraph_listed_after_its_users():
    """An inlined cond branch is appended at the end of the GraphDef: its constants must fold all the same.

        AddV2(input, Rsqrt(AddV2(var, eps)))   (nodes listed users first)   =>  AddV2(input, Const)
    """
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="input")
        variance = tf.constant([1.0, 4.0, 0.25])
        tf.identity(x + tf.math.rsqrt(variance + 1e-3), name="embeddings")
    graph_def = graph_of(build)
    x = np.ones((2, 3), np.float32)
    before = run_graph(graph_def, x)
    reverse_order(graph_def)
    summary = PASSES["fold_constants"](graph_def, PassContext())
    PASSES["strip_unused"](graph_def, PassContext())
    assert summary == "folded 1 constant subgraphs"
    assert not {"Rsqrt"} & set(ops(graph_def)) and ops(graph_def).count("AddV2") == 1
    assert_same(run_graph(graph_def, x), before)


def dropout_graph():
    """TF1 and TF2 dropout masks with constant keep probability 1 (rate 0), then x * 2 kept as real work."""
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        keep = tf.constant(1.0, name="keep_prob")
        tf1_mask = tf.floor(keep + tf.random.uniform(tf.shape(x)))                     # Floor(AddV2(keep, u))
        tf2_mask = tf.greater_equal(tf.random.uniform(tf.shape(x)), tf.constant(0.0))  # GreaterEqual(u, rate)
        y = tf.divide(x, keep) * tf1_mask
        tf.identity(y * tf.cast(tf2_mask, tf.float32) * 2.0, name="embeddings")
    return graph_of(build)


def test_remove_inference_dropout_makes_both_masks_constant():
    graph_def = dropout_graph()
    summary = PASSES["remove_inference_dropout"](graph_def, PassContext())
    PASSES["strip_unused"](graph_def, PassContext())
    assert summary == "replaced 2 dropout masks by constants"
    assert not {"RandomUniform", "Floor", "GreaterEqual"} & set(ops(graph_def))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(run_graph(graph_def, x), x * 2.0)


def test_bypass_neutral_arithmetic_in_either_operand_order():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        y = tf.subtract(tf.add(0.0, tf.divide(tf.multiply(1.0, x), 1.0)), 0.0)  # 0 + (1 * x) / 1 - 0
        y = tf.where(tf.constant(True), y, 0.0)                                    # SelectV2(True, y, 0)
        tf.multiply(tf.multiply(y, 2.0), 1.0, name="embeddings")                   # a named output stays
    graph_def = graph_of(build)
    summary = PASSES["bypass_neutral_arithmetic"](graph_def, PassContext())
    PASSES["strip_unused"](graph_def, PassContext())
    assert summary == "bypassed 5 neutral operations"
    assert sorted(o for o in ops(graph_def) if o != "Const") == ["Mul", "Mul", "Placeholder"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(run_graph(graph_def, x), x * 2.0)


def test_sort_topologically_puts_every_node_after_its_inputs():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        tf.identity(tf.nn.relu(x * 3.0) + x, name="embeddings")
    graph_def = graph_of(build)
    reverse_order(graph_def)
    assert PASSES["sort_topologically"](graph_def, PassContext()) == f"sorted {len(graph_def.node)} nodes"
    seen = set()
    for node in graph_def.node:
        assert {i.lstrip("^").split(":")[0] for i in node.input} <= seen
        seen.add(node.name)
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(run_graph(graph_def, x), np.maximum(x * 3.0, 0) + x)


def test_strip_unused_keeps_the_input_and_what_the_outputs_need():
    from facecvt.core.errors import FacecvtError

    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        tf.identity(tf.constant(1.0), name="embeddings")  # does not read the input
        tf.identity(x * 2.0, name="label_batch")
    graph_def = graph_of(build)
    assert PASSES["strip_unused"](graph_def, PassContext()) == "removed 3 unused nodes"
    assert sorted(node_map(graph_def)) == ["Const", "embeddings", "input"]
    with pytest.raises(FacecvtError, match="output node 'logits' is not in the graph"):
        PASSES["strip_unused"](graph_def, PassContext(output_names=["logits"]))


def test_fuse_l2_normalize_and_prelu_for_the_text_graph():
    """The .pbtxt's fusions: chains OpenCV fuses only in a binary graph become one node, named as the chain's end."""
    from facecvt.graph_ops import opencv_fusions  # noqa: F401

    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        alpha = tf.constant([0.1, 0.2, 0.3, 0.4], name="alpha")
        prelu = tf.add(tf.multiply(tf.negative(alpha), tf.nn.relu(tf.negative(x))), tf.nn.relu(x), name="prelu")
        tf.math.l2_normalize(prelu, 1, 1e-10, name="embeddings")
        shared = tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), 1, keepdims=True), 1e-10))
        tf.identity(tf.multiply(x, shared) + shared, name="not_fused")  # the Rsqrt has another consumer
    graph_def = graph_of(build)
    assert PASSES["fuse_prelu"](graph_def, PassContext()) == "fused 1 PReLUs"
    assert PASSES["fuse_l2_normalize"](graph_def, PassContext()) == "fused 1 L2 normalisations"
    nodes = node_map(graph_def)
    assert nodes["prelu"].op == "PReLU" and list(nodes["prelu"].input) == ["input", "alpha"]
    assert nodes["embeddings"].op == "L2Normalize" and nodes["embeddings"].input[0] == "prelu"
    assert ops(graph_def).count("Rsqrt") == 1 and "Neg" not in ops(graph_def)


def test_no_pass_calls_another():
    """Cleanup such as strip_unused and sort_topologically is a step of the pipelines, never hidden in a pass."""
    import ast
    import importlib
    import inspect

    from facecvt.graph_ops.registry import PASS_MODULES

    modules = {name: importlib.import_module(f"facecvt.graph_ops.{name}") for name in PASS_MODULES}
    for module_name, module in modules.items():
        tree = ast.parse(inspect.getsource(module))
        helpers = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        for func in helpers.values():
            if not any(getattr(d, "id", None) == "graph_pass" for d in func.decorator_list):
                continue
            called, stack = set(), [func]
            while stack:  # the pass and the module's helpers it calls
                for call in [n for n in ast.walk(stack.pop()) if isinstance(n, ast.Call)]:
                    name = getattr(call.func, "id", getattr(call.func, "attr", None))
                    if name in helpers and name not in called and name != func.name:
                        stack.append(helpers[name])
                    called.add(name)
            others = (called & set(PASSES)) - {func.name}
            assert not others, f"{module_name}.{func.name} calls {others}"


def test_set_training_flags_makes_the_flags_constants_of_their_inference_value():
    def build():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="input")
        phase_train = tf.compat.v1.placeholder(tf.bool, [], name="phase_train")
        keep_prob = tf.compat.v1.placeholder(tf.float32, [], name="keep_prob")
        tf.identity(tf.where(phase_train, x, x * keep_prob), name="embeddings")
    graph_def = graph_of(build)
    ctx = PassContext(training_flags={"phase_train": False, "keep_prob": 1.0})
    assert PASSES["set_training_flags"](graph_def, ctx) == "set phase_train=False, keep_prob=1.0"
    nodes = node_map(graph_def)
    assert nodes["phase_train"].op == nodes["keep_prob"].op == "Const"
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    assert np.array_equal(run_graph(graph_def, x), x)


def test_replace_input_makes_a_queue_fed_identity_a_dynamic_batch_placeholder():
    def build():
        queue = tf.compat.v1.FIFOQueue(4, [tf.float32], shapes=[[2, 2, 3]])
        tf.identity(queue.dequeue_up_to(2), name="input")
        tf.identity(tf.reshape(tf.compat.v1.get_default_graph().get_tensor_by_name("input:0"), [-1, 12]),
                    name="embeddings")
    graph_def = graph_of(build)
    ctx = PassContext(input_shape=(None, 2, 2, 3))
    assert PASSES["replace_input"](graph_def, ctx) == "input: Identity -> Placeholder ?x2x2x3"
    PASSES["strip_unused"](graph_def, ctx)
    assert not {"FIFOQueueV2", "QueueDequeueUpToV2"} & set(ops(graph_def))
    x = np.ones((5, 2, 2, 3), np.float32)
    assert run_graph(graph_def, x).shape == (5, 12)
