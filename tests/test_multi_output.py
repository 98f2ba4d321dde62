"""Several outputs and a free input size, end to end, on the three MTCNN nets (issue 11, items 2-4).

Every export keeps every output, in order, under names the manifest maps back; runners return
every output; verify compares each output on its own (a row per output); P-Net keeps its free
height and width in ONNX, TFLite and Core ML and matches TensorFlow at three sizes in each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main
from facecvt.core.errors import FacecvtError
from facecvt.samples.mtcnn import OUTPUTS

from conftest import faces_folder, require_shared

FP32_REL = 1e-4  # fp32: max |Δ| relative to the output's largest magnitude
SIZES = ((12, 12), (30, 47), (64, 48))  # (H, W): P-Net's smallest input, odd sizes, wider than tall


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="session")
def pnet_exports(frozen_nets, tmp_path_factory) -> dict:
    """P-Net exported (fp32) to every runtime, its input size left free: backend -> path."""
    from facecvt.workflows.export_artifact import export

    folder = tmp_path_factory.mktemp("pnet_exports")
    frozen = frozen_nets["pnet"]
    return {result.backend: result.path for result in (
        export("opencv", frozen, folder / "pnet.pb"),
        export("onnx", frozen, folder / "pnet.onnx"),
        export("tflite", frozen, folder / "pnet.tflite"),
        export("coreml", frozen, folder / "pnet.mlpackage"))}


@pytest.fixture(scope="session")
def onet_exports(frozen_nets, tmp_path_factory) -> dict:
    from facecvt.workflows.export_artifact import export

    folder = tmp_path_factory.mktemp("onet_exports")
    frozen = frozen_nets["onet"]
    return {result.backend: result for result in (
        export("opencv", frozen, folder / "onet.pb"),
        export("onnx", frozen, folder / "onet.onnx"),
        export("tflite", frozen, folder / "onet.tflite"),
        export("coreml", frozen, folder / "onet.mlpackage"))}


def _reference(pb: Path):
    from facecvt.validate.runners import runner_class

    return runner_class("tensorflow")(pb)


def test_the_loader_keeps_every_output_of_a_detector_in_graph_order(frozen_nets):
    for net, frozen in frozen_nets.items():
        assert frozen.output_names == tuple(OUTPUTS[net])
    assert frozen_nets["onet"].output_shapes == {"onet/prob1": (None, 2), "onet/conv6-2/conv6-2": (None, 4),
                                                 "onet/conv6-3/conv6-3": (None, 10)}
    assert frozen_nets["pnet"].input_shape == (None, None, None, 3) and frozen_nets["pnet"].free_size


def test_inspect_lists_the_outputs_it_would_keep(mtcnn_dir):
    result = invoke("inspect", mtcnn_dir / "onet.pb", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(o["name"], o["shape"], o["dtype"]) for o in report["outputs"]] == [
        ("onet/prob1", [None, 2], "float32"), ("onet/conv6-2/conv6-2", [None, 4], "float32"),
        ("onet/conv6-3/conv6-3", [None, 10], "float32")]
    result = invoke("inspect", mtcnn_dir / "pnet.pb")
    assert result.exit_code == 0, result.output
    assert "shape [None, None, None, 3]" in result.stdout and result.stdout.count("(kept)") == 2


def test_output_order_is_the_one_asked_for_in_every_export(mtcnn_dir, tmp_path):
    from facecvt.validate.runners import runner_class

    wanted = ["onet/conv6-3/conv6-3", "onet/prob1"]
    out = tmp_path / "two.onnx"
    result = invoke("to-onnx", mtcnn_dir / "onet.pb", "-o", out, "--output", ",".join(wanted))
    assert result.exit_code == 0, result.output
    with runner_class("onnxruntime")(out) as runner:
        assert runner.output_names == wanted
        landmarks, prob = runner.run(np.zeros((1, 48, 48, 3), np.float32))
    assert landmarks.shape == (1, 10) and prob.shape == (1, 2)


@pytest.mark.parametrize("net", ["rnet", "onet"])
def test_every_runtime_returns_every_output_by_name(net, frozen_nets, tmp_path):
    """OpenCV (forward(names), the spelled-out softmax fused), ONNX Runtime, LiteRT (which reorders
    its outputs: matched by name) and Core ML (names made legal) against TensorFlow, fp32."""
    from facecvt.validate.runners import runner_class
    from facecvt.validate.verify import match_outputs
    from facecvt.workflows.export_artifact import export

    frozen = frozen_nets[net]
    size = frozen.input_shape[1]
    x = np.random.default_rng(1).uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
    with _open_reference(frozen) as ref:
        expected = ref.run(x)
    for target, suffix in (("opencv", ".pb"), ("onnx", ".onnx"), ("tflite", ".tflite"), ("coreml", ".mlpackage")):
        result = export(target, frozen, tmp_path / f"{net}{suffix}")
        options = {k: v for k, v in result.details["runner_options"].items()}
        with runner_class(result.backend)(result.path, **options) as runner:
            got = runner.run(x)
            order = match_outputs(list(frozen.output_names), runner.output_names, runner.describe())
        for name, want, index in zip(frozen.output_names, expected, order):
            assert got[index].shape == want.shape, (target, name)
            rel = np.abs(got[index] - want).max() / np.abs(want).max()
            assert rel <= FP32_REL, (target, name, rel)


class _open_reference:
    """TensorFlow running a FrozenGraph's own GraphDef (a context manager)."""

    def __init__(self, frozen):
        from facecvt.core.model import Model
        from facecvt.validate.runners import runner_class

        model = Model(graph_def=frozen.graph_def, path=Path("frozen.pb"), kind="pb", input_name=frozen.input_name,
                      output_name=frozen.output_name, output_names=list(frozen.output_names),
                      input_shape=frozen.input_shape)
        self.runner = runner_class("tensorflow")(Path("frozen.pb"), model=model)

    def __enter__(self):
        return self.runner

    def __exit__(self, *exc):
        self.runner.close()


@pytest.mark.parametrize("backend", ["opencv", "onnxruntime", "litert", "coreml"])
def test_pnet_runs_at_three_sizes_and_matches_tensorflow_at_each(backend, pnet_exports, mtcnn_dir):
    """OpenCV included: its channel softmax is rewritten (opencv_passes.softmax_to_opencv_form)."""
    from facecvt.validate.artifacts import default_runner_options
    from facecvt.validate.runners import runner_class
    from facecvt.validate.verify import match_outputs

    path = pnet_exports[backend]
    with _reference(mtcnn_dir / "pnet.pb") as ref, \
            runner_class(backend)(path, **default_runner_options(backend, path)) as runner:
        assert runner.input_shape[1:3] == (None, None)
        order = match_outputs(ref.output_names, runner.output_names, runner.describe())
        for h, w in SIZES:
            x = np.random.default_rng(h * w).uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
            expected, got = ref.run(x), runner.run(x)
            got = [got[index] for index in order]
            assert got[0].ndim == 4 and got[0].shape[0] == 2 and got[0].shape[3] == 2
            for name, want, have in zip(ref.output_names, expected, got):
                assert have.shape == want.shape, (backend, name, h, w)
                assert np.abs(have - want).max() / np.abs(want).max() <= FP32_REL, (backend, name, h, w)


def test_pnet_onnx_keeps_symbolic_height_and_width(pnet_exports):
    import onnx

    model = onnx.load(str(pnet_exports["onnxruntime"]), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]


def test_input_shape_fixes_a_free_size(mtcnn_dir, tmp_path):
    import onnx

    out = tmp_path / "pnet24.onnx"
    result = invoke("to-onnx", mtcnn_dir / "pnet.pb", "-o", out, "--input-shape", "-1,24,?,3")
    assert result.exit_code == 0, result.output
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 24, "W", 3]


def test_verify_shows_a_row_per_output_in_the_table_and_the_json(mtcnn_dir, onet_exports, tmp_path):
    report_path = tmp_path / "verify.json"
    candidates = [onet_exports[b].path for b in ("opencv", "onnxruntime", "litert", "coreml")]
    result = invoke("verify", mtcnn_dir / "onet.pb", *candidates, "--random", 12, "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert [o["name"] for o in report["outputs"]] == OUTPUTS["onet"]
    assert report["outputs"][2]["shape"] == [None, 10]
    for candidate in report["candidates"]:
        rows = candidate["outputs"]
        assert [r["name"] for r in rows] == OUTPUTS["onet"]
        assert [r["kind"] for r in rows] == ["prob", "box", "landmarks"]
        assert all(r["pass"] and r["rel_max_abs"] <= FP32_REL for r in rows), rows
    assert candidate["outputs"][1]["candidate_name"] == "onet_conv6_2_conv6_2"  # Core ML's legal name
    table_rows = [line for line in result.stdout.splitlines() if "onet/conv6-3/" in line]
    assert len(table_rows) == 4  # one landmarks row per candidate


def test_verify_judges_each_output_and_names_the_one_that_fails(mtcnn_dir, frozen_nets, tmp_path):
    """A 1 % error in the landmarks head alone: only that output fails, and the message names it."""
    from facecvt.graph_ops.graph import node_map
    from facecvt.workflows.export_artifact import export

    frozen = frozen_nets["onet"]
    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    bias = next(n for n in graph_def.node if n.name.startswith("onet/conv6-3") and n.op == "Const"
                and "biases" in n.name)
    import tensorflow as tf

    value = tf.make_ndarray(bias.attr["value"].tensor) * 1.01 + 0.01
    bias.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float32)))
    assert node_map(graph_def)
    broken = type(frozen)(graph_def=graph_def, input_name=frozen.input_name, output_names=frozen.output_names,
                          input_shape=frozen.input_shape, output_shapes=frozen.output_shapes)
    out = export("onnx", broken, tmp_path / "broken.onnx").path
    result = invoke("verify", mtcnn_dir / "onet.pb", out, "--random", 8, "--json", tmp_path / "v.json")
    assert result.exit_code == 1, result.output
    rows = json.loads((tmp_path / "v.json").read_text())["candidates"][0]["outputs"]
    assert [r["pass"] for r in rows] == [True, True, False]
    assert "onet/conv6-3/conv6-3: rel_max_abs" in result.stderr


def test_verify_pairs_on_a_detector_asks_for_the_embedding_output(mtcnn_dir, frozen_nets, tmp_path):
    """O-Net's probability, box and landmarks (2, 4, 10 values) hold no face embedding to compare pairs with."""
    from facecvt.workflows.export_artifact import export

    faces = require_shared(faces_folder())
    onnx = export("onnx", frozen_nets["onet"], tmp_path / "onet.onnx").path
    report_path = tmp_path / "verify.json"
    result = invoke("verify", mtcnn_dir / "onet.pb", onnx, "--images", faces, "--pairs", faces / "pairs.csv",
                    "--json", report_path)
    _assert_refused(result, "--pairs compares face embeddings", "none of its outputs", "onet/prob1 [?,2]",
                    "onet/conv6-2/conv6-2 [?,4]", "onet/conv6-3/conv6-3 [?,10]", "--embedding-output NAME")
    assert not report_path.exists()


def test_verify_sizes_runs_a_free_size_model_at_each_size(mtcnn_dir, pnet_exports, tmp_path):
    report_path = tmp_path / "sizes.json"
    result = invoke("verify", mtcnn_dir / "pnet.pb", pnet_exports["onnxruntime"], pnet_exports["litert"],
                    "--random", 3, "--sizes", "12x12,48x64,160x120", "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["inputs"]["sizes"] == [[12, 12], [48, 64], [160, 120]]
    for candidate in report["candidates"]:
        assert candidate["count"] == 9
        prob, box = candidate["outputs"]
        assert prob["shape"] == [None, None, None, 2] and box["shape"] == [None, None, None, 4]
        assert box["max_pixels"] is not None and box["max_pixels"] < 0.01  # fp32, in pixels of the 12x12 cell
    result = invoke("verify", mtcnn_dir / "pnet.pb", pnet_exports["onnxruntime"], "--random", 3)
    assert result.exit_code == 2 and "--sizes" in result.stderr
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,same\n")
    result = invoke("verify", mtcnn_dir / "pnet.pb", pnet_exports["onnxruntime"], "--pairs", pairs,
                    "--sizes", "12x12")  # pairs compare embeddings at the model's size: refused, not a crash
    assert result.exit_code == 2 and "--pairs" in result.stderr and "--sizes" in result.stderr, result.output


def test_export_manifest_maps_every_export_name_to_the_graph_name(mtcnn_dir, tmp_path):
    out = tmp_path / "bundle"
    result = invoke("export", mtcnn_dir / "onet.pb", "-o", out, "--targets", "onnx,coreml")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == OUTPUTS["onet"]
    coreml = next(a for a in manifest["artifacts"] if a["target"] == "coreml")
    assert coreml["names"] == {"onet_input": "onet/input", "onet_prob1": "onet/prob1",
                               "onet_conv6_2_conv6_2": "onet/conv6-2/conv6-2",
                               "onet_conv6_3_conv6_3": "onet/conv6-3/conv6-3"}
    assert [(o["name"], o["original_name"], o["shape"]) for o in coreml["outputs"]][2] == (
        "onet_conv6_3_conv6_3", "onet/conv6-3/conv6-3", [None, 10])
    assert [r["name"] for r in coreml["verify"]["outputs"]] == OUTPUTS["onet"]
    onnx_artifact = next(a for a in manifest["artifacts"] if a["target"] == "onnx")
    assert all(k == v for k, v in onnx_artifact["names"].items())
    assert "`onet_prob1` -> `onet/prob1`" in (out / "README.md").read_text()


def _assert_refused(result, *mention):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for word in mention:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", ["to-onnx", "freeze", "export"])
def test_an_output_that_is_not_in_the_graph_is_refused_and_nothing_is_written(command, mtcnn_dir, tmp_path):
    out = tmp_path / ("out" if command == "export" else "out.onnx" if command == "to-onnx" else "out.pb")
    result = invoke(command, mtcnn_dir / "onet.pb", "-o", out, "--output", "onet/prob1,onet/conv6-9")
    _assert_refused(result, "onet/conv6-9", "--output")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["to-tflite", "freeze", "export"])
def test_an_input_shape_that_contradicts_the_graph_is_refused_naming_both(command, mtcnn_dir, tmp_path):
    out = tmp_path / ("out" if command == "export" else "out.tflite" if command == "to-tflite" else "out.pb")
    result = invoke(command, mtcnn_dir / "onet.pb", "-o", out, "--input-shape", "-1,24,24,3")
    _assert_refused(result, "?,24,24,3", "?,48,48,3")
    assert list(tmp_path.iterdir()) == []
    _assert_refused(invoke(command, mtcnn_dir / "pnet.pb", "-o", out, "--input-shape", "1,12,12"), "N,H,W,C")


def test_output_matching_is_by_name_not_position():
    from facecvt.validate.verify import match_outputs

    reference = ["onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3"]
    litert_order = ["onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3", "onet/prob1"]
    assert match_outputs(reference, litert_order, "x") == [2, 0, 1]
    assert match_outputs(reference, ["onet_conv6_3_conv6_3", "onet_prob1", "onet_conv6_2_conv6_2"], "x") == [1, 2, 0]
    with pytest.raises(FacecvtError, match="no output 'onet/prob1'"):
        match_outputs(reference, litert_order[:2] + ["other"], "x")


def test_output_tolerances_follow_what_the_output_means():
    from facecvt.core.output_kinds import infer_output_kind
    from facecvt.validate.compare import OutputComparator, OutputTolerances

    assert [infer_output_kind(n) for n in ("pnet/prob1", "rnet/conv5-2/conv5-2", "onet/conv6-3/conv6-3",
                                           "embeddings", "Identity")] == [
        "prob", "box", "landmarks", "embedding", "tensor"]
    ref = np.array([[0.1, -0.2, 0.05, 0.3]], np.float32)
    box = OutputComparator("rnet/conv5-2/conv5-2", "box", OutputTolerances.for_output("int8", "box"))
    box.update(ref, ref + 0.05, (24, 24))  # 0.05 of a 24-px box: 1.2 px
    row = box.result()
    assert row["pass"] and row["max_pixels"] == pytest.approx(1.2) and row["min_cosine"] < 0.99  # cosine not judged
    box = OutputComparator("rnet/conv5-2/conv5-2", "box", OutputTolerances.for_output("int8", "box"))
    box.update(ref, ref + 0.1, (24, 24))
    assert box.result()["failed"] == ["max_pixels"]
    head = OutputComparator("head", "tensor", OutputTolerances.for_output("fp32", "tensor"))
    big = np.full((2, 8), 7.0, np.float32)
    head.update(big, big + 3e-4, None)  # |Δ| 3e-4 on values of 7: within 1e-4 relative
    assert head.result()["pass"]


def test_a_probability_map_is_judged_on_its_p99_and_its_worst_cell():
    """One probability per input (R-/O-Net): int8's max |Δp| <= 0.2. A map (P-Net, thousands of windows
    per input): p99 <= 0.1 and the worst cell <= 0.5; fp16 keeps 0.01 on both."""
    from facecvt.validate.compare import OutputComparator, OutputTolerances

    def judged(ref, cand, precision="int8"):
        comparator = OutputComparator("pnet/prob1", "prob", OutputTolerances.for_output(precision, "prob"))
        comparator.update(ref, cand, ref.shape[1:3] if ref.ndim == 4 else None)
        return comparator.result()

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (4, 20, 20, 2)).astype(np.float32)
    few = ref.copy()
    few.reshape(-1)[rng.choice(few.size, few.size // 200, replace=False)] += 0.3  # 0.5 % of the cells 0.3 off
    row = judged(ref, few)
    assert row["pass"] and row["max_abs"] == pytest.approx(0.3, abs=1e-6) and row["p99_abs"] < 0.1
    assert row["tolerances"]["prob_atol"] is None and row["tolerances"]["prob_map_p99"] == 0.1
    assert judged(ref, few, "fp16")["failed"] == ["max_abs"]
    assert judged(ref, ref + 0.15)["failed"] == ["p99_abs"]  # every cell 0.15 off: the bulk, not a tail
    worst = ref.copy()
    worst[0, 0, 0, 1] += 0.6
    assert judged(ref, worst)["failed"] == ["max_abs"]
    vector = ref[:, 0, 0, :]  # one probability per input: the max is judged
    assert judged(vector, vector + 0.19)["pass"] and judged(vector, vector + 0.21)["failed"] == ["max_abs"]
    assert judged(vector, vector + 0.21)["tolerances"]["prob_map_p99"] is None


ALL_PRECISIONS = ("--precision", "tflite=fp32,fp16,int8", "--precision", "coreml=fp32,fp16")


@pytest.mark.slow
@pytest.mark.parametrize("net", ["rnet", "onet"])
def test_rnet_and_onet_export_to_every_target_and_precision_and_verify_per_output(net, mtcnn_dir, tmp_path):
    """opencv, onnx, tflite fp32/fp16/int8 (calibrated on the faces), coreml fp32/fp16: every output of
    every artifact within its tolerance on the 61 shared faces (int8 by probability and pixels)."""
    faces = require_shared(faces_folder())
    out = tmp_path / "bundle"
    result = invoke("export", mtcnn_dir / f"{net}.pb", "-o", out, "--images", faces, *ALL_PRECISIONS)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == 7 and manifest["pass"]
    for artifact in manifest["artifacts"]:
        rows = artifact["verify"]["outputs"]
        assert [r["name"] for r in rows] == OUTPUTS[net] and all(r["pass"] for r in rows), artifact["target"]


@pytest.mark.slow
def test_pnet_exports_verify_per_output_at_three_sizes_on_the_faces(mtcnn_dir, tmp_path):
    """P-Net (free size) to opencv, onnx, tflite fp32/fp16 and coreml fp32/fp16, verified on the faces
    resized to 12x12, 48x64 and 160x120 (int8, scored on faces it was not calibrated on: test_mtcnn_int8.py)."""
    faces = require_shared(faces_folder())
    out = tmp_path / "bundle"
    result = invoke("export", mtcnn_dir / "pnet.pb", "-o", out, "--images", faces, "--targets", "opencv,onnx,tflite,coreml",
                    "--precision", "tflite=fp32,fp16", "--precision", "coreml=fp32,fp16",
                    "--sizes", "12x12,48x64,160x120")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["sizes"] == [[12, 12], [48, 64], [160, 120]]
    assert manifest["outputs"][0]["shape"] == [None, None, None, 2]
    assert all(r["pass"] for a in manifest["artifacts"] for r in a["verify"]["outputs"])


def test_pnet_opencv_spelled_out_softmax_is_wrong_in_opencv_without_the_rewrite(frozen_nets, tmp_path):
    """The failure first: OpenCV computes P-Net's spelled-out channel softmax wrongly (silently: off
    by ~0.95); after the rewrite it matches TensorFlow (above, at three sizes)."""
    from facecvt.graph_ops.opencv_passes import OPENCV_PIPELINE
    from facecvt.graph_ops.registry import PassContext, run_pipeline
    from facecvt.validate.runners import runner_class

    frozen = frozen_nets["pnet"]
    graph_def = type(frozen.graph_def)()
    graph_def.CopyFrom(frozen.graph_def)
    without = [name for name in OPENCV_PIPELINE if name != "softmax_to_opencv_form"]
    assert len(without) == len(OPENCV_PIPELINE) - 1
    run_pipeline(graph_def, PassContext(input_name=frozen.input_name, output_names=list(frozen.output_names),
                                        input_shape=frozen.input_shape), without)
    plain = tmp_path / "plain.pb"
    plain.write_bytes(graph_def.SerializeToString())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32)
    with runner_class("opencv")(plain, output_names=list(frozen.output_names)) as runner, \
            _open_reference(frozen) as ref:
        (prob, box), (want_prob, want_box) = runner.run(x), ref.run(x)
    assert np.abs(prob - want_prob).max() > 0.5  # silently wrong probabilities
    assert np.abs(box - want_box).max() < 1e-5


def test_bench_times_a_free_size_model_at_each_size(mtcnn_dir, pnet_exports, tmp_path):
    report_path = tmp_path / "bench.json"
    result = invoke("bench", f"tensorflow={mtcnn_dir / 'pnet.pb'}", pnet_exports["onnxruntime"], "--batch", 1,
                    "--repeats", 3, "--sizes", "12x12,48x64", "--json", report_path)
    assert result.exit_code == 0, result.output
    rows = json.loads(report_path.read_text())["results"]
    assert [(r["backend"], r["size"]) for r in rows] == [("tensorflow", [12, 12]), ("tensorflow", [48, 64]),
                                                         ("onnxruntime", [12, 12]), ("onnxruntime", [48, 64])]
    assert all(r["speed_vs_tensorflow"] for r in rows)


@pytest.mark.parametrize("net", ["pnet", "onet"])
def test_opencv_onnx_target_keeps_every_output_and_a_free_size(net, frozen_nets, mtcnn_dir, tmp_path):
    """`to-opencv --format onnx` (OpenCV's new engine on the NCHW ONNX export): every output, by name;
    P-Net at three sizes."""
    from facecvt.workflows.export_artifact import export

    out = export("opencv-onnx", frozen_nets[net], tmp_path / f"{net}.onnx").path
    sizes = ("--sizes", "12x12,48x64,160x120") if net == "pnet" else ()
    report_path = tmp_path / "v.json"
    result = invoke("verify", mtcnn_dir / f"{net}.pb", f"opencv={out}", "--random", 3, *sizes, "--json", report_path)
    assert result.exit_code == 0, result.output
    rows = json.loads(report_path.read_text())["candidates"][0]["outputs"]
    assert [r["name"] for r in rows] == OUTPUTS[net] and all(r["rel_max_abs"] <= FP32_REL for r in rows)
