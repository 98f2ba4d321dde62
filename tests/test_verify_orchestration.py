"""`verify` end to end with in-test runners: one identical to the reference, one 3 % off on some channels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from facecvt.core.errors import FacecvtError
from facecvt.validate import runners
from facecvt.validate.report import render, write_json_atomic
from facecvt.validate.runners.base import Runner
from facecvt.validate.artifacts import artifact_precision
from facecvt.validate.verify import InputSpec, verify

PROJECTION = np.random.default_rng(42).normal(size=(48, 16))


class FakeRunner(Runner):
    """A tiny deterministic "model": 4x4 average pooling of a 16x16 RGB input, a projection to 16-D, L2 norm."""

    backend = "fake"
    embedding_size = 16
    opened: list = []

    def __init__(self, path, **options):
        super().__init__(path)
        self.closed = False
        FakeRunner.opened.append(self)

    @property
    def input_shape(self):
        return (None, 16, 16, 3)

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        pooled = batch.reshape(len(batch), 4, 4, 4, 4, 3).mean(axis=(2, 4)).reshape(len(batch), -1)
        return pooled.astype(np.float64) @ PROJECTION[:, :self.embedding_size]

    def _infer(self, batch):
        emb = self._raw(batch)
        return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)

    def close(self):
        self.closed = True


class PerturbedRunner(FakeRunner):
    """The same model with its first 4 embedding channels scaled by 3 % before the normalisation."""

    backend = "fake_perturbed"

    def _infer(self, batch):
        emb = self._raw(batch)
        emb[:, :4] *= 1.03
        return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


class NarrowRunner(FakeRunner):
    """The same model with an 8-D embedding (a different model)."""

    backend = "fake_narrow"
    embedding_size = 8


class BrokenRunner(FakeRunner):
    """Loads, then fails inside its runtime."""

    backend = "fake_broken"

    def _infer(self, batch):
        raise RuntimeError("kernel Conv2D failed: out of cheese")


FAKES = {cls.backend: cls for cls in (FakeRunner, PerturbedRunner, NarrowRunner, BrokenRunner)}


@pytest.fixture
def fake_backends(monkeypatch, tmp_path):
    """Register the fake runners and return a dict backend -> an existing artifact path."""
    FakeRunner.opened = []
    for name in FAKES:
        monkeypatch.setitem(runners.RUNNERS, name, f"{__name__}:{FAKES[name].__name__}")
    monkeypatch.setattr(runners, "runner_class", lambda backend: FAKES[backend])
    paths = {}
    for name in FAKES:
        paths[name] = tmp_path / f"{name}.model"
        paths[name].write_bytes(b"fake")
    return paths


@pytest.fixture
def face_folder(tmp_path):
    """6 "people" x 2 photos (20x20, resized to 16x16 by verify) and a pairs.csv: 6 same, 9 different."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for person in range(6):
        base = rng.integers(0, 256, (5, 5, 3))
        for shot in range(2):
            image = np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 3, (20, 20, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"p{person}_{shot}.png")
    rows = [f"p{p}_0.png,p{p}_1.png,1" for p in range(6)]
    rows += [f"p{p}_0.png,p{(p + k) % 6}_1.png,0" for p in range(3) for k in (1, 2, 3)]
    (folder / "pairs.csv").write_text("left,right,same\n" + "\n".join(rows) + "\n")
    return folder


def test_identical_passes_perturbed_fails(fake_backends):
    calls = []
    report = verify(("fake", fake_backends["fake"]),
                    [("fake", fake_backends["fake"]), ("fake_perturbed", fake_backends["fake_perturbed"], "fp32")],
                    InputSpec(random=10, batch_size=4, seed=1),
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]
    assert report["pass"] is False
    assert report["reference"] == {"backend": "fake", "path": str(fake_backends["fake"])}
    assert report["inputs"]["count"] == 10 and report["inputs"]["source"] == "random 10 (seed 1)"
    same, perturbed = report["candidates"]
    assert same["pass"] and same["failed"] == [] and same["max_abs"] == 0.0 and same["precision"] == "fp32"
    assert same["min_cosine"] == pytest.approx(1.0) and same["max_dist_change"] < 1e-6
    assert not perturbed["pass"] and perturbed["failed"] == ["max_abs", "min_cosine"]
    assert perturbed["max_abs"] > 1e-3 and 0.999 < perturbed["min_cosine"] < 0.99999
    assert perturbed["max_dist_change"] > 1e-4 and perturbed["dist_exact"]
    assert all(r.closed for r in FakeRunner.opened) and len(FakeRunner.opened) == 3


def test_tolerance_overrides_and_precision(fake_backends):
    report = verify(("fake", fake_backends["fake"]), [("fake_perturbed", fake_backends["fake_perturbed"], "int8")],
                    InputSpec(random=6), tolerances={"atol": None, "min_cosine": 0.999})
    (cand,) = report["candidates"]
    assert cand["pass"] and report["pass"]
    assert cand["tolerances"] == {"atol": None, "min_cosine": 0.999, "max_dist_change": None}


def test_pairs_model_card(fake_backends, face_folder):
    Image.new("RGB", (20, 20), (1, 2, 3)).save(face_folder / "extra.png")  # compared, in no pair
    report = verify(("fake", fake_backends["fake"]),
                    [("fake", fake_backends["fake"], "fp16"), ("fake_perturbed", fake_backends["fake_perturbed"])],
                    InputSpec(images=face_folder, batch_size=5), pairs=face_folder / "pairs.csv")
    assert [r["precision"] for r in report["pairs"]["results"]] == ["fp32", "fp16", "fp32"]  # the model card's rows
    assert report["inputs"]["count"] == 13 and report["inputs"]["input_size"] == [16, 16]
    block = report["pairs"]
    assert block["count"] == 15 and block["same"] == 6 and block["folds"] is None and block["format"] == "csv"
    ref, same, perturbed = block["results"]
    assert [r["role"] for r in block["results"]] == ["reference", "candidate", "candidate"]
    assert ref["accuracy"] == 1.0 and ref["auc"] == 1.0 and ref["eer"] == 0.0
    assert ref["threshold"] == pytest.approx(block["reference_threshold"])
    for key in ("accuracy", "auc", "eer", "threshold"):
        assert same[key] == ref[key]
    assert ref["decision_agreement"] == same["decision_agreement"] == 1.0
    assert perturbed["decision_agreement"] == 1.0 and perturbed["auc"] == 1.0  # 3 % keeps well separated pairs

    json_path = write_json_atomic(face_folder / "report.json", report)
    loaded = json.loads(json_path.read_text())
    assert loaded["pass"] is False and loaded["candidates"][1]["failed"] == ["max_abs", "min_cosine"]
    assert loaded["pairs"]["results"][0]["backend"] == "fake"
    write_json_atomic(json_path, report)  # a rerun replaces the report
    assert sorted(p.name for p in face_folder.glob("*.json")) == ["report.json"]

    console = Console(record=True, width=220, color_system=None)
    render(report, console)
    text = console.export_text()
    assert "FAIL max_abs, min_cosine" in text and "PASS" in text
    assert "fake (reference)" in text and "100.00%" in text


def test_html_report_with_pairs_has_the_roc_and_the_model_card(fake_backends, face_folder, tmp_path):
    from facecvt.validate.html_report import write_html_atomic

    report = verify(("fake", fake_backends["fake"]),
                    [("fake", fake_backends["fake"]), ("fake_perturbed", fake_backends["fake_perturbed"])],
                    InputSpec(images=face_folder, batch_size=5), pairs=face_folder / "pairs.csv")
    roc = report["pairs"]["results"][0]["roc"]
    assert roc["far"][0] == roc["tar"][0] == 0.0 and roc["far"][-1] == roc["tar"][-1] == 1.0
    perturbed = report["candidates"][1]
    assert perturbed["localize"] == {"available": False, "reason": perturbed["localize"]["reason"]}  # fakes: no layers
    text = write_html_atomic(tmp_path / "report.html", json.loads(json.dumps(report))).read_text()
    assert text.count('<img class="distribution"') == 2 and text.count('<img class="roc"') == 1
    assert '<table class="model-card">' in text and "fake (reference)" in text
    assert "Not available: the reference" in text and '<img class="depth"' not in text


def test_lfw_layout_with_folds(fake_backends, tmp_path):
    """LFW keeps images in per-person folders and nothing at the top: the pairs alone give the inputs."""
    rng = np.random.default_rng(3)
    people = {name: rng.integers(0, 256, (4, 4, 3)) for name in ("Ann", "Bob", "Cy", "Di")}
    for name, base in people.items():
        (tmp_path / name).mkdir()
        for n in (1, 2):
            image = np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 2, (16, 16, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / name / f"{name}_{n:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("2\t2\nAnn\t1\t2\nBob\t1\t2\nAnn\t1\tBob\t2\nBob\t1\tCy\t2\n"
                                        "Cy\t1\t2\nDi\t1\t2\nCy\t1\tDi\t2\nDi\t1\tAnn\t2\n")
    ref = ("fake", fake_backends["fake"])
    report = verify(ref, [ref], InputSpec(images=tmp_path), pairs=tmp_path / "pairs.txt")
    assert report["inputs"]["count"] == 8 and report["pass"]
    block = report["pairs"]
    assert block["format"] == "lfw" and block["folds"] == 2 and block["count"] == 8 and block["same"] == 4
    assert "accuracy_std" in block["results"][0] and block["results"][1]["decision_agreement"] == 1.0


def test_errors_become_facecvt_errors(fake_backends, face_folder):
    ref = ("fake", fake_backends["fake"])
    with pytest.raises(FacecvtError, match="8-D embeddings but the reference .* 16-D"):
        verify(ref, [("fake_narrow", fake_backends["fake_narrow"])], InputSpec(random=2))
    with pytest.raises(FacecvtError, match="failed on a batch .*RuntimeError: kernel Conv2D failed"):
        verify(ref, [("fake_broken", fake_backends["fake_broken"])], InputSpec(random=2))
    assert all(r.closed for r in FakeRunner.opened)
    with pytest.raises(FacecvtError, match="exactly one input source"):
        verify(ref, [ref], InputSpec())
    with pytest.raises(FacecvtError, match="needs real images"):
        verify(ref, [ref], InputSpec(random=3), pairs=face_folder / "pairs.csv")
    with pytest.raises(FacecvtError, match="unknown backend 'fakee'.*did you mean: fake"):
        verify(ref, [("fakee", fake_backends["fake"])], InputSpec(random=2))
    with pytest.raises(FacecvtError, match="does not exist"):
        verify(ref, [("fake", face_folder / "absent.onnx")], InputSpec(random=2))
    with pytest.raises(FacecvtError, match="unknown precision 'fp64'"):
        verify(ref, [("fake", fake_backends["fake"], "fp64")], InputSpec(random=2))


def test_artifact_precision_defaults_to_fp32(tmp_path):
    assert artifact_precision("onnxruntime", tmp_path / "m.onnx") == "fp32"
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 16)
    assert artifact_precision("litert", junk) == "fp32"


@pytest.mark.slow
def test_artifact_precision_of_real_tflite(tmp_path):
    """fp32 / fp16 / dynamic-range int8 tflite files written by the TFLite converter (~10 s: imports TF)."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 64)).astype(np.float32))
    dense = tf.constant(rng.normal(size=(64, 256)).astype(np.float32))  # big enough to be quantised

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    def model(x):
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")), [1, 2])
        return tf.math.l2_normalize(features @ dense, axis=1)

    def fp16(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    def int8(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    for precision, configure in (("fp32", lambda converter: None), ("fp16", fp16), ("int8", int8)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
        configure(converter)
        path = tmp_path / f"{precision}.tflite"
        path.write_bytes(converter.convert())
        assert artifact_precision("litert", path) == precision


class FixedBatchRunner(FakeRunner):
    """The fake model with its batch fixed to 4; records the chunk sizes its runtime was given."""

    backend = "fake_fixed"

    def __init__(self, path, **options):
        super().__init__(path)
        self.chunks = []

    @property
    def input_shape(self):
        return (4, 16, 16, 3)

    def _infer(self, batch):
        self.chunks.append(len(batch))
        return super()._infer(batch)


def test_base_runner_chunks_a_fixed_batch_and_pads_the_last_chunk(tmp_path):
    x = np.random.default_rng(3).uniform(-1, 1, (6, 16, 16, 3)).astype(np.float32)
    fixed, free = FixedBatchRunner(tmp_path / "m"), FakeRunner(tmp_path / "m")
    got = fixed.embed(x)
    assert fixed.chunks == [4, 4] and got.shape == (6, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, free.embed(x), atol=1e-6)
    free.max_chunk = 4
    assert free.embed(x).shape == (6, 16)
    with pytest.raises(FacecvtError, match=r"takes images of shape \(16, 16, 3\) \(HWC\)"):
        fixed.embed(np.zeros((1, 8, 8, 3), np.float32))
