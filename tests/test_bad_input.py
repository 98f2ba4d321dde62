"""Bad input never crashes facecvt: exit 2, one line on stderr, no traceback, no output left behind."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from facecvt.cli import main

COMMANDS = ["inspect", "freeze", "to-opencv", "to-onnx", "to-tflite", "to-coreml"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_clean_failure(result, expected_status=2, *must_mention):
    text = result.output
    assert result.exit_code == expected_status, text
    assert "Traceback" not in text, text
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in must_mention:
        assert word in lines[0], lines[0]
    return lines[0]


def command_args(command: str, model, out_dir):
    if command == "inspect":
        return [command, model], []
    suffix = {"freeze": ".pb", "to-opencv": ".pb", "to-onnx": ".onnx", "to-tflite": ".tflite",
              "to-coreml": ".mlpackage"}[command]
    out = out_dir / f"out{suffix}"
    return [command, model, "-o", out], [out, out.with_suffix(".pbtxt")]


@pytest.fixture(scope="module")
def tiny_graph_def():
    from facecvt.samples.mobile import tiny_training_graph_def

    return tiny_training_graph_def()


def bad_files(folder, tiny_graph_def):
    """name -> path of a malformed model."""
    from facecvt.graph_ops.graph import node_map

    files = {}
    files["empty"] = folder / "empty.pb"
    files["empty"].write_bytes(b"")
    files["random"] = folder / "random.pb"
    files["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    data = tiny_graph_def.SerializeToString()
    files["truncated"] = folder / "truncated.pb"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"] = folder / "notes.pb"
    files["text"].write_text("this is not a model\n")
    files["missing"] = folder / "does_not_exist.pb"
    files["empty_folder"] = folder / "empty_dir"
    files["empty_folder"].mkdir()

    def variant(name, edit):
        graph_def = type(tiny_graph_def)()
        graph_def.CopyFrom(tiny_graph_def)
        edit(graph_def, node_map(graph_def))
        files[name] = folder / f"{name}.pb"
        files[name].write_bytes(graph_def.SerializeToString())

    variant("dangling_input", lambda g, n: n["embeddings"].input.__setitem__(0, "no_such_node"))

    def no_placeholder(g, nodes):
        nodes["input"].op = "Const"
        nodes["input"].attr["value"].tensor.dtype = 1
    variant("no_placeholder", no_placeholder)
    variant("unknown_op", lambda g, n: setattr(n["Tiny/pool"], "op", "PyFunc"))
    return files


@pytest.fixture(scope="module")
def malformed(tmp_path_factory, tiny_graph_def):
    return bad_files(tmp_path_factory.mktemp("bad"), tiny_graph_def)


CASES = ["empty", "random", "truncated", "text", "missing", "empty_folder", "dangling_input", "no_placeholder",
         "unknown_op"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_models_exit_2_with_one_line(command, case, malformed, tmp_path):
    args, outputs = command_args(command, malformed[case], tmp_path)
    line = assert_clean_failure(invoke(*args))
    assert line.startswith("error: ")
    assert not any(p.exists() for p in outputs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_messages_name_the_problem(malformed, tmp_path):
    assert "no_such_node" in assert_clean_failure(invoke("inspect", malformed["dangling_input"]))
    assert "PyFunc" in assert_clean_failure(invoke("inspect", malformed["unknown_op"]))
    assert "does not exist" in assert_clean_failure(invoke("inspect", malformed["missing"]))
    assert "no checkpoint" in assert_clean_failure(invoke("inspect", malformed["empty_folder"]))
    assert "empty" in assert_clean_failure(invoke("inspect", malformed["empty"]))


@pytest.fixture(scope="module")
def tiny_pb(tmp_path_factory, tiny_graph_def):
    path = tmp_path_factory.mktemp("tiny") / "tiny_raw.pb"
    path.write_bytes(tiny_graph_def.SerializeToString())
    return path


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_wrong_output_name_suggests_the_real_one(command, tiny_pb, tmp_path):
    args, outputs = command_args(command, tiny_pb, tmp_path)
    line = assert_clean_failure(invoke(*args, "--output", "embedings"))
    assert "did you mean: embeddings" in line
    assert not any(p.exists() for p in outputs)


def test_existing_output_needs_force(tiny_pb, tmp_path):
    out = tmp_path / "clean.pb"
    out.write_bytes(b"keep me")
    assert "--force" in assert_clean_failure(invoke("freeze", tiny_pb, "-o", out))
    assert out.read_bytes() == b"keep me"
    assert invoke("freeze", tiny_pb, "-o", out, "--force").exit_code == 0
    assert out.read_bytes() != b"keep me"


def test_bad_options(tiny_pb, tmp_path):
    assert "--batch" in assert_clean_failure(invoke("freeze", tiny_pb, "-o", tmp_path / "a.pb", "--batch", "zero"))
    assert "NAME=VALUE" in assert_clean_failure(invoke("freeze", tiny_pb, "-o", tmp_path / "a.pb", "--set", "x"))
    assert "calibration" in assert_clean_failure(
        invoke("to-tflite", tiny_pb, "-o", tmp_path / "a.tflite", "--precision", "int8"))
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_pb):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert invoke("to-onnx", tiny_pb, "-o", out).exit_code == 0
    return out


def test_verify_bad_inputs(tiny_pb, tiny_onnx, malformed, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    assert str(images) in assert_clean_failure(invoke("verify", tiny_pb, tiny_onnx, "--images", images))
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    assert "broken.png" in assert_clean_failure(invoke("verify", tiny_pb, tiny_onnx, "--images", images))
    assert "does not exist" in assert_clean_failure(invoke("verify", tiny_pb, tmp_path / "gone.onnx", "--random", "2"))
    assert "corrupt.onnx" in assert_clean_failure(invoke("verify", tiny_pb, _corrupt(tmp_path / "corrupt.onnx"),
                                                         "--random", "2"))
    assert_clean_failure(invoke("verify", malformed["truncated"], tiny_onnx, "--random", "2"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("left,right,same\nnobody.png,ghost.png,1\n")
    assert "nobody.png" in assert_clean_failure(invoke("verify", tiny_pb, tiny_onnx, "--pairs", pairs))
    assert "inputs" in assert_clean_failure(invoke("verify", tiny_pb, tiny_onnx))
    json_out = tmp_path / "report.json"
    assert_clean_failure(invoke("verify", tiny_pb, tiny_onnx, "--random", "0", "--json", json_out))
    assert not json_out.exists()


def _corrupt(path):
    path.write_bytes(b"\x08\x01garbage" * 10)
    return path


def test_export_and_bench_bad_inputs(tiny_pb, tiny_onnx, malformed, tmp_path):
    out = tmp_path / "bundle"
    assert "--targets" in assert_clean_failure(invoke("export", tiny_pb, "-o", out, "--targets", "onnx,caffe"))
    assert_clean_failure(invoke("export", malformed["random"], "-o", out, "--targets", "onnx"))
    empty = tmp_path / "none"
    empty.mkdir()
    assert_clean_failure(invoke("export", tiny_pb, "-o", out, "--targets", "onnx", "--images", empty))
    assert not out.exists()
    assert_clean_failure(invoke("bench", tmp_path / "gone.onnx"))
    assert_clean_failure(invoke("bench", _corrupt(tmp_path / "c.tflite")))


def test_a_planted_bug_is_an_internal_error_not_bad_input(tiny_pb, tmp_path, monkeypatch):
    """A pass that raises AttributeError: exit 3 with the internal-error line, and the fuzz check fails on it."""
    from facecvt.graph_ops import cleanup  # noqa: F401  (registers strip_unused before it is replaced)
    from facecvt.graph_ops.registry import PASSES
    from test_fuzz_graphs import check_command

    def buggy_pass(graph_def, ctx):
        return graph_def.no_such_field

    monkeypatch.setitem(PASSES, "strip_unused", buggy_pass)
    out = tmp_path / "clean.pb"
    result = invoke("freeze", tiny_pb, "-o", out)
    assert result.exit_code == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error in facecvt: AttributeError"), lines
    assert "a bug" in lines[0] and "--debug" in lines[0] and "Traceback" not in result.output
    assert not out.exists()
    with pytest.raises(AssertionError):
        check_command(tiny_pb, "freeze", tmp_path / "fuzz")
