"""`verify` on a model whose face embedding sits beside another head (a TF1 multi-task graph written
with plain TF ops): `--pairs` compares the embedding output, found by its shape or named with
`--embedding-output`; `--localize` names, under each failing output, the layer where its error
appears (issue 11)."""

from __future__ import annotations

import json

import pytest

from _broken_artifacts import broken_copy
from facecvt.core.errors import FacecvtError
from facecvt.samples.foreign_inputs import TWO_HEAD_OUTPUTS, write_two_head_graph

from test_bad_input import assert_clean_failure, invoke


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """The two-head graph (.pb), its clean frozen graph and its ONNX export."""
    from facecvt.core.model import load_model
    from facecvt.graph_ops.pipeline import freeze
    from facecvt.workflows.export_artifact import export

    folder = tmp_path_factory.mktemp("two_heads")
    pb = write_two_head_graph(folder / "two_heads.pb")
    frozen = freeze(load_model(pb)).frozen
    assert frozen.output_names == TWO_HEAD_OUTPUTS
    assert frozen.output_shapes == {"face_embedding": (None, 128), "head_pose": (None, 3)}
    return pb, frozen, export("onnx", frozen, folder / "two_heads.onnx").path


def test_pairs_compare_the_output_shaped_like_an_embedding(two_heads, faces_dir, tmp_path):
    pb, _, onnx = two_heads
    report_path = tmp_path / "verify.json"
    result = invoke("verify", pb, onnx, "--images", faces_dir, "--pairs", faces_dir / "pairs.csv",
                    "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert [row["name"] for row in report["candidates"][0]["outputs"]] == list(TWO_HEAD_OUTPUTS)
    pairs = report["pairs"]
    assert pairs["embedding_output"] == "face_embedding" and pairs["count"] == 300
    assert [row["role"] for row in pairs["results"]] == ["reference", "candidate"]
    assert pairs["results"][1]["decision_agreement"] == 1.0
    assert "embeddings from output face_embedding" in result.stdout


def test_an_embedding_output_that_is_not_an_output_is_refused_listing_them(two_heads, faces_dir, tmp_path):
    pb, _, onnx = two_heads
    report_path = tmp_path / "verify.json"
    assert_clean_failure(invoke("verify", pb, onnx, "--images", faces_dir, "--pairs", faces_dir / "pairs.csv",
                                "--embedding-output", "face_embeding", "--json", report_path), 2,
                         "'face_embeding'", "face_embedding, head_pose", "did you mean")
    assert_clean_failure(invoke("verify", pb, onnx, "--random", 2, "--embedding-output", "face_embedding"), 2,
                         "--pairs")
    assert not report_path.exists()


def test_the_embedding_output_is_named_the_only_one_or_the_one_shaped_like_one():
    from facecvt.validate.embedding_output import embedding_by_shape, requested_embedding

    names = ["face_embedding", "head_pose"]
    assert requested_embedding(["embeddings"], None, "m.pb") == 0
    assert requested_embedding(names, None, "m.pb") is None  # the shapes decide
    assert requested_embedding(names, "head_pose:0", "m.pb") == 1  # asked: any output, any shape
    assert embedding_by_shape(names, [(8, 128), (8, 3)], "m.pb") == 0
    assert embedding_by_shape(["features", "arcface_embedding"], [(8, 512), (8, 512)], "m.pb") == 1
    with pytest.raises(FacecvtError, match=r"2 of its outputs look like one \(a \[\?,128\], b \[\?,256\]\)"):
        embedding_by_shape(["a", "b"], [(8, 128), (8, 256)], "m.pb")
    with pytest.raises(FacecvtError, match="none of its outputs is a 2-D float vector of 64 or more values"):
        embedding_by_shape(["prob", "map"], [(8, 2), (8, 4, 4, 128)], "m.pb")


# the fault each broken copy holds: the embedding head's conv (the graph's middle Conv2D) scaled by 3 %,
# which only the embedding depends on; or the trunk's first conv reading BGR, which both heads depend on
FAULTS = {"scaled": ("embedding_head/conv/", {"face_embedding"}), "bgr": ("trunk/conv1/", set(TWO_HEAD_OUTPUTS))}


@pytest.mark.parametrize("how", list(FAULTS))
def test_localize_names_the_corrupted_layer_under_each_output_it_breaks(how, two_heads, tmp_path):
    pb, frozen, onnx = two_heads
    scope, failing = FAULTS[how]
    broken, conv = broken_copy(onnx, frozen, how, tmp_path / f"{how}.onnx")
    assert conv == f"{scope}Conv2D"
    report_path, html_path = tmp_path / "verify.json", tmp_path / "verify.html"
    result = invoke("verify", pb, broken, "--random", 4, "--localize", "--json", report_path, "--html", html_path)
    assert result.exit_code == 1, result.output
    candidate = json.loads(report_path.read_text())["candidates"][0]
    assert {row["name"] for row in candidate["outputs"] if not row["pass"]} == failing
    rows = candidate["localize"]["outputs"]
    assert [row["name"] for row in rows] == list(TWO_HEAD_OUTPUTS)
    for row in rows:
        first = row["first_divergence"]
        if row["name"] in failing:  # the conv, or the bias/relu a runtime fuses into it
            assert row["pass"] is False and first["layer"] in {f"{scope}{op}" for op in ("Conv2D", "BiasAdd", "Relu")}
        else:
            assert row["pass"] is True and first is None, row
        assert 0 < row["matched"] < candidate["localize"]["matched"]  # only the layers that output depends on
    assert "per output" in result.stdout and '<table class="localize-outputs">' in html_path.read_text()
