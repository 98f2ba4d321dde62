"""Core ML export (coremltools ML program) and the Core ML runner against TensorFlow.

On Linux the runner executes the saved program with facecvt's NumPy MIL executor.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from _tiny_graph import EMBEDDING_SIZE, IMAGE_SIZE, min_cosine, unconvertible_frozen_graph
from facecvt.convert import coreml as coreml_target
from facecvt.workflows.export_artifact import export
from facecvt.core.errors import FacecvtError
from facecvt.validate.mil import load_program
from facecvt.core.ct_env import has_coreml_runtime
from facecvt.core.targets import COREML_IMAGE_SCALE
from facecvt.validate.runners import load_runner


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, frozen, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml") / f"tiny_{request.param}.mlpackage"
    return export("coreml", frozen, out, precision=request.param)


@pytest.fixture(scope="module")
def image_export(frozen, tmp_path_factory):
    return export("coreml", frozen, tmp_path_factory.mktemp("coreml_image") / "tiny_image.mlpackage",
                  image_input=True)


def test_export_matches_tensorflow_at_batch_1_and_5(exported, images, expected):
    with load_runner("coreml", exported.path) as runner:
        assert runner.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
        single = runner.embed(images[:1])
        batch = runner.embed(images)
    assert single.shape == (1, EMBEDDING_SIZE) and batch.shape == (5, EMBEDDING_SIZE)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(single, batch[:1], atol=1e-6)  # batch size does not change a result
    if exported.precision == "fp32":
        assert np.max(np.abs(batch - expected)) <= 1e-4
    else:
        assert min_cosine(batch, expected) >= 0.9995
        assert np.max(np.abs(batch - expected)) > 1e-5  # the fp16 program really rounds


def test_details_describe_the_program(exported):
    details = exported.details
    assert details["precision"] == exported.precision
    assert details["compute_precision"] == {"fp32": "FLOAT32", "fp16": "FLOAT16"}[exported.precision]
    assert details["deployment_target"] == "iOS15"
    assert details["flexible_batch"] is True
    program = load_program(exported.path)
    counts = {}
    for op in program.operations:
        if op.op_type != "const":
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    assert details["mil_ops"] == counts
    assert counts["conv"] == 3  # conv, depthwise conv (groups=C), 1x1 conv
    assert ("cast" in counts) == (exported.precision == "fp16")


def test_package_keeps_names_nhwc_layout_and_flexible_batch(exported):
    assert exported.path.suffix == ".mlpackage" and exported.path.is_dir()
    program = load_program(exported.path)
    assert program.inputs == {"input": ((None, IMAGE_SIZE, IMAGE_SIZE, 3), "fp32")}
    assert program.outputs == ["embeddings"]
    (feature,) = program.spec.description.input
    batch_range = feature.type.multiArrayType.shapeRange.sizeRanges[0]
    assert (batch_range.lowerBound, batch_range.upperBound) == (1, coreml_target.MAX_BATCH)
    # coremltools moves NHWC to its NCHW convs inside the program: the first op reading the input
    # (after the fp16 cast) is a transpose
    readers = [op.op_type for op in program.operations if "input" in [v.name for v in op.inputs.values()
                                                                        if hasattr(v, "name")]]
    assert readers == (["transpose"] if exported.precision == "fp32" else ["cast"])


def test_image_input_bakes_scale_and_bias(image_export):
    details = image_export.details
    assert details["input_type"] == "image" and details["flexible_batch"] is False
    program = load_program(image_export.path)
    (feature,) = program.spec.description.input
    assert feature.type.WhichOneof("Type") == "imageType"
    assert feature.type.imageType.colorSpace == feature.type.imageType.RGB
    first_two = [op for op in program.operations if op.op_type != "const"][:2]
    assert [op.op_type for op in first_two] == ["mul", "add"]
    assert first_two[0].inputs["x"].name == "input"
    assert float(first_two[0].inputs["y"].val) == pytest.approx(1 / 128)
    np.testing.assert_allclose(np.ravel(first_two[1].inputs["y"].val), [-127.5 / 128] * 3)
    metadata = program.metadata()
    assert float(metadata[COREML_IMAGE_SCALE]) == pytest.approx(1 / 128)


def test_image_input_runner_takes_preprocessed_or_raw_pixels(image_export, images, expected):
    with load_runner("coreml", image_export.path) as runner:
        assert runner.input_shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
        from_preprocessed = runner.embed(images)
    pixels = images * 128 + 127.5
    with load_runner("coreml", image_export.path, raw_pixels=True) as runner:
        from_pixels = runner.embed(pixels)
    assert np.max(np.abs(from_preprocessed - expected)) <= 1e-4
    assert np.max(np.abs(from_pixels - expected)) <= 1e-4


def test_fixed_batch_export_splits_and_pads_batches(frozen, tmp_path, images, expected):
    fixed = dataclasses.replace(frozen, input_shape=(2, IMAGE_SIZE, IMAGE_SIZE, 3))
    result = export("coreml", fixed, tmp_path / "fixed2.mlpackage")
    assert result.details["flexible_batch"] is False
    with load_runner("coreml", result.path) as runner:
        assert runner.input_shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
        embeddings = runner.embed(images)  # 5 images: runs of 2, 2 and 1 padded to 2
    assert embeddings.shape == (5, EMBEDDING_SIZE)
    assert np.max(np.abs(embeddings - expected)) <= 1e-4


def test_unconvertible_op_is_named_and_leaves_no_file(tmp_path):
    out = tmp_path / "erfinv.mlpackage"
    with pytest.raises(FacecvtError, match="Erfinv") as error:
        export("coreml", unconvertible_frozen_graph(), out)
    assert "coremltools" in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options, message", [({"precision": "int8"}, "int8"),
                                              ({"image_input": True, "image_bias": [0.1, 0.2]}, "image_bias")])
def test_bad_options_are_user_errors(frozen, tmp_path, options, message):
    with pytest.raises(FacecvtError, match=message):
        export("coreml", frozen, tmp_path / "bad.mlpackage", **options)
    assert list(tmp_path.iterdir()) == []


def test_runner_refuses_wrong_image_size(exported):
    with load_runner("coreml", exported.path) as runner:
        with pytest.raises(FacecvtError, match="takes images of shape"):
            runner.embed(np.zeros((1, 32, 32, 3), np.float32))


def test_asking_for_core_ml_itself_off_macos_is_a_clear_error(exported):
    if has_coreml_runtime():
        pytest.skip("Core ML itself is available here")
    with pytest.raises(FacecvtError, match="only on macOS"):
        load_runner("coreml", exported.path, engine="coreml")


@pytest.mark.slow
def test_released_facenet_matches_tensorflow(released_frozen, faces, tmp_path):
    """The released Inception-ResNet-v1 (512-D): fp32 within 1e-4, fp16 cosine >= 0.9995."""
    from conftest import run_graph

    frozen = released_frozen.frozen
    batch = faces[:8]
    reference = run_graph(frozen.graph_def, batch)
    for precision in ("fp32", "fp16"):
        result = export("coreml", frozen, tmp_path / f"facenet_{precision}.mlpackage", precision=precision)
        with load_runner("coreml", result.path) as runner:
            embeddings = runner.embed(batch)
        if precision == "fp32":
            assert np.max(np.abs(embeddings - reference)) <= 1e-4
        else:
            assert min_cosine(embeddings, reference) >= 0.9995


def test_tensorflow_names_become_legal_core_ml_feature_names(tmp_path):
    """Core ML refuses 'rnet/conv5-2/conv5-2' as a feature name: the sanitiser renames, details map back."""
    from facecvt.core.frozen import FrozenGraph
    from facecvt.core.targets import TARGETS, legal_names
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="rnet/input")
        kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32))
        tf.reduce_mean(tf.nn.conv2d(x, kernel, 1, "SAME"), [1, 2], name="rnet/conv5-2/conv5-2")
    frozen = FrozenGraph(graph.as_graph_def(), input_name="rnet/input", output_name="rnet/conv5-2/conv5-2",
                         input_shape=(None, 8, 8, 3), embedding_size=4)
    result = export("coreml", frozen, tmp_path / "names.mlpackage")
    assert result.details["names"] == {"rnet_input": "rnet/input", "rnet_conv5_2_conv5_2": "rnet/conv5-2/conv5-2"}
    with load_runner("coreml", result.path) as runner:
        assert runner.embed(np.zeros((3, 8, 8, 3), np.float32)).shape == (3, 4)
    assert legal_names(TARGETS["coreml"], ["a/b", "a_b", "9x", "ok"]) == {"a/b": "a_b", "a_b": "a_b_1", "9x": "_9x",
                                                                         "ok": "ok"}


def _package_digests(model, folder) -> dict:
    import hashlib

    model.save(str(folder))
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "Manifest.json"}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_skipping_the_pass_pipelines_bookkeeping_writes_the_same_package(frozen, tmp_path, precision):
    """convert/coreml_speed.py changes how fast coremltools converts, not what it writes."""
    import contextlib
    import io

    from facecvt.core.ct_env import import_coremltools

    ct = import_coremltools()
    input_type, _ = coreml_target._input_type(ct, frozen, False, 1.0, None)
    with contextlib.redirect_stderr(io.StringIO()):
        plain = ct.convert(frozen.graph_def, source="tensorflow", convert_to="mlprogram", inputs=[input_type],
                           outputs=[ct.TensorType(name=name) for name in frozen.output_names],
                           compute_precision=getattr(ct.precision, coreml_target.COMPUTE_PRECISION[precision]),
                           minimum_deployment_target=getattr(ct.target, coreml_target.DEPLOYMENT_TARGET),
                           skip_model_load=True)
    fast = coreml_target._convert(ct, input_type, frozen, precision)
    assert _package_digests(fast, tmp_path / "fast.mlpackage") == _package_digests(plain, tmp_path / "plain.mlpackage")


def test_the_converted_program_is_still_validated_once(frozen, monkeypatch):
    from coremltools.converters.mil.mil.block import Block
    from coremltools.converters.mil.mil.program import Program

    from facecvt.core.ct_env import import_coremltools

    ct = import_coremltools()
    calls = []
    original = Program.validate
    monkeypatch.setattr(Program, "validate", lambda self, **kw: calls.append(self) or original(self, **kw))
    propagate = Block._propagate_nonreplaceable_vars
    model = coreml_target._convert(ct, coreml_target._input_type(ct, frozen, False, 1.0, None)[0], frozen, "fp32")
    assert calls == [model._mil_program]  # once, on the finished program (about 110 times without the patch)
    assert Block._propagate_nonreplaceable_vars is propagate  # both patches undone


def test_a_program_with_compressed_weights_keeps_its_nonreplaceable_walk():
    from coremltools.converters.mil import Builder as mb

    from facecvt.convert.coreml_speed import _holds_nonreplaceable
    from facecvt.core.ct_env import import_coremltools

    ct = import_coremltools()

    @mb.program(input_specs=[mb.TensorSpec(shape=(2,))], opset_version=ct.target.iOS16)
    def compressed(x):
        weights = mb.constexpr_affine_dequantize(quantized_data=np.array([1, 2], np.int8), zero_point=np.int8(0),
                                                 scale=np.float32(0.5), axis=0)
        return mb.add(x=x, y=weights)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2,))], opset_version=ct.target.iOS16)
    def plain(x):
        return mb.add(x=x, y=np.array([0.5, 1.0], np.float32))

    assert _holds_nonreplaceable(compressed.functions["main"])
    assert not _holds_nonreplaceable(plain.functions["main"])
