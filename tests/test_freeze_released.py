"""Freeze on the released-weights training graph: structure gone, embeddings unchanged (61 faces)."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze
from facecvt.core.model import load_model

from conftest import read_graph_def, run_graph

pytestmark = pytest.mark.slow


def test_the_released_sample_is_a_real_training_graph(released_model):
    ops = {n.op for n in released_model.graph_def.node}
    assert {"Switch", "Merge", "FIFOQueueV2", "QueueDequeueUpToV2", "FusedBatchNorm", "RandomUniform"} <= ops
    nodes = released_model.nodes
    assert nodes["input"].op == "Identity" and nodes["phase_train"].op == "Placeholder"
    assert "batch_size" in nodes and "label_batch" in released_model.extra_outputs
    # the moving-average updates, rewritten AssignSub -> Sub, hang off control edges
    updates = [n for n in released_model.graph_def.node if n.name.endswith("cond_1/AssignMovingAvg")]
    assert len(updates) == 112 and all(n.op == "Sub" for n in updates)
    assert released_model.training_flags == {"phase_train": False}


def test_frozen_graph_has_no_training_structure(released_frozen):
    graph_def = released_frozen.frozen.graph_def
    ops = {n.op for n in graph_def.node}
    assert not ops & TRAINING_OPS
    assert not any(r.startswith("^") for n in graph_def.node for r in n.input)
    names = {n.name for n in graph_def.node}
    assert "phase_train" not in names and "label_batch" not in names and "batch_size" not in names
    inputs = [n for n in graph_def.node if n.op == "Placeholder"]
    assert [n.name for n in inputs] == ["input"]
    assert [d.size for d in inputs[0].attr["shape"].shape.dim] == [-1, 160, 160, 3]
    assert released_frozen.frozen.embedding_size == 512
    summaries = {r.name: r.summary for r in released_frozen.reports}
    assert "folded 112 batch norms" in summaries["fold_batch_norms"]


@pytest.mark.parametrize("batch", [1, 8])
def test_frozen_equals_raw_and_graph_final_on_the_shared_faces(released_model, released_frozen, graph_final_path,
                                                               faces, batch):
    frozen = run_graph(released_frozen.frozen.graph_def, faces, batch=batch)
    raw = run_graph(released_model.graph_def, faces, feeds={"phase_train:0": False}, batch=batch)
    final = run_graph(read_graph_def(graph_final_path), faces, batch=1)  # fixed at batch 1
    assert frozen.shape == (len(faces), 512) and len(faces) == 61
    assert np.abs(frozen - raw).max() <= 1e-5
    assert np.abs(frozen - final).max() <= 1e-5


def test_checkpoint_format_freezes_to_the_same_result(models_dir, released_frozen, faces):
    from facecvt.samples.facenet import SampleSpec, write_sample

    folder = models_dir / "released_checkpoint"
    write_sample(SampleSpec(weights="released"), folder, "checkpoint")
    assert {p.suffix for p in folder.iterdir()} >= {".meta", ".index"}
    result = freeze(load_model(folder))
    a = run_graph(result.frozen.graph_def, faces[:8])
    b = run_graph(released_frozen.frozen.graph_def, faces[:8])
    assert np.abs(a - b).max() <= 1e-6


def test_tf2onnx_keeps_the_training_conds_of_the_raw_graph_but_not_of_the_frozen_one(released_raw_pb,
                                                                                      released_frozen):
    import tf2onnx

    raw, _ = tf2onnx.convert.from_graph_def(read_graph_def(released_raw_pb),
                                            input_names=["input:0", "phase_train:0"],
                                            output_names=["embeddings:0"], opset=17,
                                            shape_override={"input:0": [None, 160, 160, 3]})
    if_nodes = [n for n in raw.graph.node if n.op_type == "If"]
    assert len(if_nodes) >= 100
    assert "phase_train:0" in [i.name for i in raw.graph.input]
    clean, _ = tf2onnx.convert.from_graph_def(released_frozen.frozen.graph_def, input_names=["input:0"],
                                              output_names=["embeddings:0"], opset=17)
    assert [i.name for i in clean.graph.input] == ["input:0"]
    assert not {"If", "Loop"} & {n.op_type for n in clean.graph.node}
