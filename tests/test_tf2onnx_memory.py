"""tf2onnx with bounded memory (convert/tf2onnx_memory.py): same model, fresh node protos, the old way as fallback."""

from __future__ import annotations

import os

import numpy as np
import pytest

from facecvt.convert import tf2onnx_memory
from facecvt.core.tf_env import import_tf


def _convert(frozen):
    import_tf()
    import tf2onnx

    return tf2onnx.convert.from_graph_def(frozen.graph_def, input_names=["input:0"],
                                          output_names=["embeddings:0"], opset=17)[0]


def _run(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input:0": x})[0]


def test_the_bounded_conversion_computes_what_the_plain_one_does(frozen, images):
    plain, bounded = _convert(frozen), tf2onnx_memory.convert_bounded(lambda: _convert(frozen))
    assert [n.op_type for n in bounded.graph.node] == [n.op_type for n in plain.graph.node]
    np.testing.assert_array_equal(_run(bounded, images), _run(plain, images))
    assert tf2onnx_memory.CATCH_ERRORS_VARIABLE not in os.environ  # restored


def test_a_node_update_starts_from_a_fresh_proto_keeping_unset_fields_unset():
    import_tf()
    from onnx import helper
    from tf2onnx.graph import Graph

    graph = Graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], output_shapes={}, dtypes={})
    node = graph.get_node_by_name("relu")
    before = node.op
    with tf2onnx_memory.fresh_node_protos():
        node.update_proto()
    assert node.op is not before  # the stale proto (and the arena holding its attributes) can be freed
    assert (node.op.name, node.op.op_type, list(node.op.input), list(node.op.output)) == ("relu", "Relu", ["x"], ["y"])
    assert not node.op.HasField("domain") and not node.op.HasField("doc_string")
    node.update_proto()  # tf2onnx's own method is back after the block
    assert node.op is node.op


def test_a_pass_that_raises_without_the_copy_is_converted_again_the_old_way(monkeypatch):
    calls = []

    def convert():
        calls.append(os.environ.get(tf2onnx_memory.CATCH_ERRORS_VARIABLE))
        if len(calls) == 1:
            raise ValueError("an optimizer pass failed")
        return "model"

    assert tf2onnx_memory.convert_bounded(convert) == "model"
    assert calls == ["FALSE", None]  # first without tf2onnx's copies, then as tf2onnx does by default


def test_the_users_choice_of_tf2onnx_error_handling_stands(monkeypatch):
    monkeypatch.setenv(tf2onnx_memory.CATCH_ERRORS_VARIABLE, "FALSE")

    def convert():
        raise ValueError("an optimizer pass failed")

    with pytest.raises(ValueError):
        tf2onnx_memory.convert_bounded(convert)
    assert os.environ[tf2onnx_memory.CATCH_ERRORS_VARIABLE] == "FALSE"
