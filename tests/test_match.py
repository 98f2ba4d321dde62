"""The pattern matcher the passes share: commutative operands in either order, names bound once."""

from __future__ import annotations

import numpy as np

from facecvt.core.tf_env import import_tf
from facecvt.graph_ops.graph import node_map
from facecvt.graph_ops.match import const, either, match, matches, op, tensor

tf = import_tf()

X = tensor("x")
PRELU = op("AddV2", op("Relu", X), op("Mul", const("alpha"), op("Relu", op("Neg", X)), name="mul"))


def nodes_of(build) -> dict:
    graph = tf.Graph()
    with graph.as_default():
        build(tf.compat.v1.placeholder(tf.float32, [None, 4], name="input"))
    return node_map(graph.as_graph_def())


def test_commutative_operands_match_in_either_order():
    def build(x):
        alpha = tf.constant([0.1, 0.2, 0.3, 0.4])
        tf.add(tf.nn.relu(x), tf.multiply(alpha, tf.nn.relu(-x)), name="a")           # as written
        tf.add(tf.multiply(tf.nn.relu(-x), alpha), tf.nn.relu(x), name="b")           # both swapped
    nodes = nodes_of(build)
    for root in ("a", "b"):
        m = match(PRELU, nodes, root)
        assert m is not None and m["x"] == "input" and m.nodes["mul"].op == "Mul"
        assert np.allclose(m.values["alpha"], [0.1, 0.2, 0.3, 0.4])


def test_a_name_bound_twice_must_be_the_same_tensor():
    def build(x):
        tf.add(tf.nn.relu(x), tf.multiply(0.25, tf.nn.relu(-tf.nn.relu(x))), name="other")  # relu(-y), y != x
    assert match(PRELU, nodes_of(build), "other") is None


def test_non_commutative_ops_keep_their_order_and_inputs_are_found_through_identity():
    pattern = op("Sub", X, const("c", where=lambda v: v.size == 1))

    def build(x):
        tf.subtract(x, tf.identity(tf.constant(2.0)), name="x_minus_c")
        tf.subtract(tf.constant(2.0), x, name="c_minus_x")
        tf.identity(tf.subtract(x, 1.0), name="output")
    nodes = nodes_of(build)
    assert match(pattern, nodes, "x_minus_c").values["c"] == 2.0  # Const read through an Identity
    assert match(pattern, nodes, "c_minus_x") is None
    assert match(pattern, nodes, "output") is None  # the root itself is never looked through


def test_either_and_where_pick_the_binding_that_fits():
    clip = either(op("Minimum", op("Maximum", X, const("low")), const("high")),
                  op("Maximum", op("Minimum", X, const("high")), const("low")))

    def build(x):
        tf.minimum(tf.maximum(x, 0.0), 6.0, name="relu6")
        tf.maximum(6.0, tf.minimum(0.5, x), name="swapped")
    nodes = nodes_of(build)
    m = match(clip, nodes, "relu6", where=lambda m: m.values["low"] <= m.values["high"])
    assert (float(m.values["low"]), float(m.values["high"])) == (0.0, 6.0)
    # max(6, min(0.5, x)) is 6: no clip with low <= high
    assert match(clip, nodes, "swapped", where=lambda m: m.values["low"] <= m.values["high"]) is None
    assert len(list(matches(op("Maximum", tensor(), tensor()), nodes, "swapped"))) == 2  # both orders
