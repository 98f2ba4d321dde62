"""facenet's Inception-ResNet-v2 sample: built as facenet's training code builds it, frozen like v1."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import TRAINING_OPS, freeze

from conftest import run_graph


def test_released_weights_are_v1s_only(tmp_path):
    result = CliRunner().invoke(main, ["sample", "facenet", "--architecture", "inception-resnet-v2",
                                       "-o", str(tmp_path / "v2.pb")])
    assert result.exit_code == 2, result.output
    assert "--weights random" in result.output and not (tmp_path / "v2.pb").exists()


@pytest.mark.slow
def test_v2_freezes_to_a_clean_graph_computing_what_the_training_graph_computes(tmp_path):
    path = tmp_path / "v2.pb"
    result = CliRunner().invoke(main, ["sample", "facenet", "--architecture", "inception-resnet-v2",
                                       "--weights", "random", "-o", str(path)])
    assert result.exit_code == 0, result.output
    model = load_model(path)
    names = {node.name for node in model.graph_def.node}
    # v2's own blocks: the Mixed_5b stem, 10 + 20 + 9 residual blocks and the 1536-channel Conv2d_7b_1x1
    assert {"InceptionResnetV2/Mixed_5b/concat", "InceptionResnetV2/Repeat_1/block17_20/add",
            "InceptionResnetV2/Repeat_2/block8_9/add"} <= names
    assert any(n.startswith("InceptionResnetV2/Conv2d_7b_1x1/") for n in names)
    frozen = freeze(model).frozen
    assert not {n.op for n in frozen.graph_def.node} & TRAINING_OPS
    x = np.random.default_rng(0).uniform(-1, 1, (3, 160, 160, 3)).astype(np.float32)
    raw = run_graph(model.graph_def, x, model.input_name, model.output_name, feeds={"phase_train:0": False})
    clean = run_graph(frozen.graph_def, x, frozen.input_name, frozen.output_name)
    assert raw.shape == (3, 512)
    assert np.abs(raw - clean).max() <= 1e-5
