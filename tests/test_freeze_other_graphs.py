"""Freeze on face-embedding graphs facecvt did not build from facenet: another architecture, and TF2."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze
from facecvt.core.model import load_model

from conftest import run_graph


@pytest.fixture(scope="module", params=["mobile", "tf2"])
def other_graph(request, mobile_raw_pb, tf2_raw_pb):
    return {"mobile": mobile_raw_pb, "tf2": tf2_raw_pb}[request.param]


def test_training_structure_is_what_we_meant_to_test(mobile_raw_pb, tf2_raw_pb):
    mobile = {n.op for n in load_model(mobile_raw_pb).graph_def.node}
    assert {"Switch", "Merge", "DepthwiseConv2dNative", "FusedBatchNorm", "FusedBatchNormV3", "Abs"} <= mobile
    tf2 = load_model(tf2_raw_pb)
    assert {"StatelessIf", "If"} <= {n.op for n in tf2.graph_def.node}
    assert tf2.training_flags == {"training": False}


def test_freeze_gives_a_clean_graph_with_the_same_embeddings(other_graph):
    model = load_model(other_graph)
    result = freeze(model)
    graph_def = result.frozen.graph_def
    assert not {n.op for n in graph_def.node} & TRAINING_OPS
    assert not any(r.startswith("^") for n in graph_def.node for r in n.input)
    x = np.random.default_rng(0).uniform(-1, 1, (5, *model.input_shape[1:])).astype(np.float32)
    flag = next(iter(model.training_flags))
    raw = run_graph(model.graph_def, x, model.input_name, model.output_name, feeds={f"{flag}:0": False})
    clean = run_graph(graph_def, x, result.frozen.input_name, result.frozen.output_name)
    assert np.abs(raw - clean).max() <= 1e-5
    single = run_graph(graph_def, x, result.frozen.input_name, result.frozen.output_name, batch=1)
    assert np.abs(single - clean).max() <= 1e-5


def test_mobile_graph_folds_v1_v3_and_unfused_batch_norms(mobile_raw_pb):
    result = freeze(load_model(mobile_raw_pb))
    summaries = {r.name: r.summary for r in result.reports}
    assert "folded 8 batch norms into weights" in summaries["fold_batch_norms"]
    assert "folded 1 per-channel scales" in summaries["fold_scales_into_weights"]
    assert result.frozen.input_name == "data" and result.frozen.embedding_size == 64


def test_fixed_batch_request_is_honoured(mobile_raw_pb):
    result = freeze(load_model(mobile_raw_pb), batch=4)
    placeholder = next(n for n in result.frozen.graph_def.node if n.op == "Placeholder")
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [4, 64, 64, 3]
