"""`verify --localize` on the tiny graph: every backend's intermediates matched to the clean TF graph,
a clean export with no divergence, and faults edited into each artifact's own file found at their conv."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from _broken_artifacts import broken_copy
from facecvt.cli import main
from facecvt.validate.html_report import render_html
from facecvt.validate.localize import _compare, _Matcher, localize
from facecvt.validate.runners import load_runner
from facecvt.validate.runners.tensorflow import TensorFlowRunner
from facecvt.validate.verify import InputSpec, verify
from facecvt.workflows.export_artifact import export

TARGETS = {"onnxruntime": ("onnx", ".onnx"), "litert": ("tflite", ".tflite"), "opencv": ("opencv", ".pb"),
           "coreml": ("coreml", ".mlpackage")}
# the tiny graph's nodes each fault can be reported at: the conv and the ops a runtime fuses into it
CONV_GROUP = {"scaled": {"Conv2D_1", "BiasAdd_1", "Relu_2"}, "bgr": {"Conv2D", "BiasAdd", "Relu"}}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("localize_tiny")


@pytest.fixture(scope="session")
def tiny_reference_pb(frozen, tiny_dir):
    path = tiny_dir / "tiny_ref.pb"
    path.write_bytes(frozen.graph_def.SerializeToString())
    return path


@pytest.fixture(scope="session")
def tiny_reference(tiny_reference_pb, frozen):
    with TensorFlowRunner(tiny_reference_pb, clean=frozen) as runner:
        yield runner


@pytest.fixture(scope="session")
def tiny_artifacts(frozen, tiny_dir):
    """backend -> the tiny graph's export for it (each made once per session)."""
    made = {}
    for backend, (target, suffix) in TARGETS.items():
        made[backend] = export(target, frozen, tiny_dir / f"tiny{suffix}").path
    return made


def _open(backend, path):
    options = {"pbtxt": path.with_suffix(".pbtxt")} if backend == "opencv" else {}
    return load_runner(backend, path, **options)


@pytest.mark.parametrize("backend", list(TARGETS))
def test_a_clean_export_has_no_divergence_and_matches_most_layers(backend, tiny_reference, tiny_artifacts, images):
    with _open(backend, tiny_artifacts[backend]) as runner:
        result = localize(tiny_reference, runner, images[:3])
    assert result["first_divergence"] is None
    assert result["total"] == 18 and result["matched"] >= 8 and result["inputs"] == 3
    order = [name for name, _ in tiny_reference.layers()]
    positions = [order.index(layer["layer"]) for layer in result["layers"]]
    assert positions == sorted(positions)  # execution order
    assert max(layer["rel"] for layer in result["layers"]) < 1e-5
    assert result["layers"][-1]["layer"] == "embeddings"


@pytest.mark.parametrize("how", ["scaled", "bgr"])
@pytest.mark.parametrize("backend", list(TARGETS))
def test_a_fault_in_the_artifact_file_is_found_at_its_conv(backend, how, frozen, tiny_reference, tiny_artifacts,
                                                           images, tmp_path):
    source = tiny_artifacts[backend]
    broken, conv = broken_copy(source, frozen, how, tmp_path / f"broken{source.suffix}")
    assert conv in CONV_GROUP[how]
    with _open(backend, broken) as runner:
        result = localize(tiny_reference, runner, images[:3])
    first = result["first_divergence"]
    assert first is not None and first["layer"] in CONV_GROUP[how], result["layers"][:4]
    assert first["rel"] > result["limit"] and set(first) >= {"layer", "op", "max_abs", "cosine"}
    before = result["layers"][:result["layers"].index(first)]
    assert all(layer["rel"] <= result["limit"] for layer in before)


def test_names_are_matched_across_runtime_spellings_and_fusions(frozen):
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen.graph_def, name="")
    layers = [(op.name, op.type) for op in graph.get_operations()
              if op.type not in ("Const", "Placeholder", "Identity")]
    matcher = _Matcher(frozen.graph_def, layers)
    assert matcher.readings("Relu;BiasAdd;Conv2D;BiasAdd/ReadVariableOp/resource1") == ["Relu", "BiasAdd", "Conv2D"]
    assert matcher.readings("Conv2D") == ["Conv2D", "BiasAdd", "Relu"]  # OpenCV: bias (and relu) fused in
    assert matcher.readings("embeddings/Rsqrt__33:0") == ["embeddings/Rsqrt"]  # tf2onnx's added node
    assert matcher.readings("embeddings_Maximum") == ["embeddings/Maximum"]  # Core ML spelling; Rsqrt not fusable
    assert matcher.readings("transpose_1") == []


def test_a_tensor_is_compared_in_the_layout_that_fits():
    ref = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    assert _compare(ref, ref.transpose(0, 3, 1, 2))["max_abs"] == 0.0  # NCHW
    off = _compare(ref, ref * 1.03)
    assert off["rel"] == pytest.approx(0.03, rel=1e-3) and off["cosine"] > 0.9999
    assert _compare(ref, np.zeros((2, 5, 6, 8), np.float32)) is None
    assert _compare(ref[:, :1, :1, :], ref[:, :1, :1, :].reshape(2, 7))["max_abs"] == 0.0  # (N,1,1,C) vs (N,C)


@pytest.fixture(scope="session")
def broken_report(frozen, tiny_reference, tiny_artifacts, tiny_dir):
    """verify of the clean and the 3 %-scaled ONNX export, without --localize: the failing one is localised."""
    broken, _ = broken_copy(tiny_artifacts["onnxruntime"], frozen, "scaled", tiny_dir / "scaled.onnx")
    return verify(tiny_reference, [("onnxruntime", tiny_artifacts["onnxruntime"]), ("onnxruntime", broken)],
                  InputSpec(random=6, batch_size=4), localize_inputs=2)


def test_verify_localizes_the_failing_candidate_only(broken_report):
    good, bad = broken_report["candidates"]
    assert good["pass"] and "localize" not in good
    assert not bad["pass"] and bad["localize"]["available"] and bad["localize"]["inputs"] == 2
    assert bad["localize"]["first_divergence"]["layer"] in CONV_GROUP["scaled"]
    assert len(bad["distribution"]["cosines"]) == 6 and sum(bad["distribution"]["abs_hist"]["counts"]) > 0


def test_html_report_embeds_the_plots_and_tables(broken_report):
    text = render_html(broken_report)
    assert text.count('<img class="distribution"') == 2 and text.count('<img class="depth"') == 1
    assert text.count("data:image/png;base64,") == 3
    assert '<table class="candidates">' in text and '<table class="localize">' in text
    assert "first divergence at <code>" in text and "http" not in text.replace("http://www.w3.org", "")


def test_a_plot_drawn_early_is_reused_and_a_different_one_drawn(broken_report, monkeypatch):
    import copy

    from facecvt.validate import html_report

    good, _ = broken_report["candidates"]
    early = html_report.distribution_png(good)
    drawn = []
    monkeypatch.setattr(html_report, "_distribution_figure", lambda *a: drawn.append(a) or (_ for _ in ()).throw(
        AssertionError("drawn again")))
    assert html_report.distribution_png(copy.deepcopy(good)) == early and not drawn  # same content: looked up
    other = copy.deepcopy(good)
    other["distribution"]["cosines"][0] = 0.5
    with pytest.raises(AssertionError, match="drawn again"):
        html_report.distribution_png(other)


def test_cli_verify_localize_writes_json_and_html(tiny_reference_pb, tiny_artifacts, frozen, tmp_path):
    broken, _ = broken_copy(tiny_artifacts["litert"], frozen, "bgr", tmp_path / "bgr.tflite")
    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    result = CliRunner().invoke(main, ["verify", str(tiny_reference_pb), str(tiny_artifacts["litert"]), str(broken),
                                       "--random", "4", "--localize", "--localize-inputs", "2",
                                       "--json", str(json_path), "--html", str(html_path)])
    assert result.exit_code == 1, result.output
    assert "first divergence at" in result.stdout and "no layer beyond the limit" in result.stdout
    report = json.loads(json_path.read_text())
    good, bad = report["candidates"]
    assert good["localize"]["first_divergence"] is None and good["localize"]["matched"] >= 8
    assert bad["localize"]["first_divergence"]["layer"] in CONV_GROUP["bgr"]
    assert html_path.read_text().count('<img class="depth"') == 2


def test_a_fixed_batch_candidate_gets_exactly_its_batch():
    from facecvt.validate.localize import _fit_batch

    class Fixed:
        input_shape = (3, 8, 8, 3)

    x = np.ones((2, 8, 8, 3), np.float32)
    fitted = _fit_batch(Fixed(), x)
    assert fitted.shape == (3, 8, 8, 3) and fitted[:2].min() == 1 and fitted[2].max() == 0
    assert _fit_batch(Fixed(), np.ones((5, 8, 8, 3), np.float32)).shape == (3, 8, 8, 3)


def test_a_tensor_is_named_after_the_reading_it_matches_even_when_others_do_not_fit(frozen, tiny_reference):
    """'MaxPool2d;Relu': Relu's reading (32x32) does not fit a 16x16 tensor; MaxPool2d's does."""

    class Exposes:
        input_shape = (None, 64, 64, 3)

        def activations(self, batch):
            return {"Relu;MaxPool2d": tiny_reference.activations(batch, ["MaxPool2d"])["MaxPool2d"]}

    from _tiny_graph import smooth_images

    result = localize(tiny_reference, Exposes(), smooth_images(2))
    assert [(layer["layer"], layer["max_abs"]) for layer in result["layers"]] == [("MaxPool2d", 0.0)]


def test_nothing_matched_is_said_not_reported_as_no_divergence(tiny_reference):
    from rich.console import Console

    from facecvt.validate.report import localize_table

    class Foreign:
        backend = "foreign"
        input_shape = (None, 64, 64, 3)

        def activations(self, batch):
            return {"layer_7": np.zeros((len(batch), 32, 32, 16), np.float32)}

    block = localize(tiny_reference, Foreign(), np.zeros((2, 64, 64, 3), np.float32))
    assert block["matched"] == 0 and block["first_divergence"] is None and "none of the 1 tensors" in block["note"]
    console = Console(record=True, width=200, color_system=None)
    console.print(localize_table({"backend": "foreign", "path": "m", "localize": {"available": True, **block}}))
    assert "not exported from this graph" in console.export_text()
