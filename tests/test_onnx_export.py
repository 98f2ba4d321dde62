"""ONNX export (tf2onnx) and the onnxruntime runner against TensorFlow on a tiny embedding graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _tiny_graph import EMBEDDING_SIZE, IMAGE_SIZE, unconvertible_frozen_graph
from facecvt.convert import onnx as onnx_target
from facecvt.workflows.export_artifact import export
from facecvt.core.errors import FacecvtError
from facecvt.validate.runners import load_runner


@pytest.fixture(scope="module", params=["nhwc", "nchw"])
def exported(request, frozen, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / f"tiny_{request.param}.onnx"
    return export("onnx", frozen, out, layout=request.param)


def test_export_matches_tensorflow_at_batch_1_and_5(exported, images, expected):
    with load_runner("onnxruntime", exported.path, threads=1) as runner:
        assert runner.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert runner.nchw == (exported.details["layout"] == "nchw")
        single = runner.embed(images[:1])
        batch = runner.embed(images)
    assert single.shape == (1, EMBEDDING_SIZE) and batch.shape == (5, EMBEDDING_SIZE)
    assert batch.dtype == np.float32
    assert np.max(np.abs(single - expected[:1])) <= 1e-5
    assert np.max(np.abs(batch - expected)) <= 1e-5


def test_model_has_plain_names_and_symbolic_batch(exported):
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    (model_input,), (model_output,) = model.graph.input, model.graph.output
    assert (model_input.name, model_output.name) == ("input", "embeddings")
    for value in (model_input, model_output):
        batch_dim = value.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param == onnx_target.BATCH_DIM and not batch_dim.HasField("dim_value")
    image_dims = [d.dim_value for d in model_input.type.tensor_type.shape.dim[1:]]
    assert image_dims == ([3, IMAGE_SIZE, IMAGE_SIZE] if exported.details["layout"] == "nchw"
                          else [IMAGE_SIZE, IMAGE_SIZE, 3])
    assert [d.dim_value for d in model_output.type.tensor_type.shape.dim[1:]] == [EMBEDDING_SIZE]


def test_details_report_opset_ops_and_ir_version(exported):
    details = exported.details
    model = onnx.load(str(exported.path))
    default_domain = {o.domain: o.version for o in model.opset_import}[""]
    assert details["opset"] == default_domain == onnx_target.default_opset()
    assert details["ir_version"] == model.ir_version
    assert sum(details["ops"].values()) == len(model.graph.node)
    assert details["ops"]["Conv"] == 3  # conv, depthwise conv (group=C), 1x1 conv


def test_nchw_model_has_no_transpose_at_its_input(exported):
    model = onnx.load(str(exported.path))
    readers = [node.op_type for node in model.graph.node if "input" in node.input]
    if exported.details["layout"] == "nchw":
        assert readers == ["Conv"]
        assert "Transpose" not in exported.details["ops"]
    else:
        assert readers == ["Transpose"]  # NHWC -> NCHW for the convs, done by the model itself


def test_default_opset_is_the_newest_both_tools_support():
    opset = onnx_target.default_opset()
    newest = onnx_target.tf2onnx_max_opset()
    assert opset <= newest and onnx_target.onnxruntime_runs_opset(opset)
    assert opset == newest or not onnx_target.onnxruntime_runs_opset(opset + 1)
    assert not onnx_target.onnxruntime_runs_opset(1000)


def test_explicit_opset_is_used(frozen, tmp_path, images, expected):
    result = export("onnx", frozen, tmp_path / "tiny13.onnx", opset=13)
    assert result.details["opset"] == 13
    with load_runner("onnxruntime", result.path) as runner:
        assert np.max(np.abs(runner.embed(images) - expected)) <= 1e-5


@pytest.mark.parametrize("options, message", [({"opset": 99}, "--opset 99"), ({"layout": "nhcw"}, "layout")])
def test_bad_options_are_user_errors(frozen, tmp_path, options, message):
    out = tmp_path / "bad.onnx"
    with pytest.raises(FacecvtError, match=message):
        export("onnx", frozen, out, **options)
    assert list(tmp_path.iterdir()) == []


def test_unconvertible_op_is_named_and_leaves_no_file(tmp_path):
    out = tmp_path / "erfinv.onnx"
    with pytest.raises(FacecvtError, match="Erfinv") as error:
        export("onnx", unconvertible_frozen_graph(), out)
    assert "tf2onnx" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_runner_splits_batches_for_a_fixed_batch_model(frozen, tmp_path, images, expected):
    model = onnx.load(str(export("onnx", frozen, tmp_path / "dyn.onnx").path))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    fixed = tmp_path / "fixed2.onnx"
    onnx.save(model, str(fixed))
    with load_runner("onnxruntime", fixed) as runner:
        assert runner.input_shape[0] == 2
        assert np.max(np.abs(runner.embed(images) - expected)) <= 1e-5
