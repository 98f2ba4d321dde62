"""The face pipeline: MTCNN detection over the TensorFlow nets, alignment, and `facecvt embed`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import boxes_on_crops, face_on_canvas, four_faces_canvas, shared_folder

from facecvt.core.errors import FacecvtError
from facecvt.pipeline.align import TEMPLATE, align, similarity_transform
from facecvt.pipeline.detect import DetectorConfig, MtcnnDetector, nms, pyramid_scales


@pytest.fixture(scope="module")
def detector(mtcnn_nets):
    return MtcnnDetector(mtcnn_nets["pnet"], mtcnn_nets["rnet"], mtcnn_nets["onet"])


def test_four_faces_on_a_canvas_are_found_on_their_crops(detector):
    canvas, crops = four_faces_canvas()
    result = detector.detect(canvas)
    assert len(result.faces) == 4, result.stages
    on = boxes_on_crops([f.box for f in result.faces], crops)
    assert sorted(on) == sorted(crops)
    for face in result.faces:
        assert face.score > 0.99
        x1, y1, x2, y2 = face.box
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
        eyes, mouth = face.landmarks[:2], face.landmarks[3:]
        assert eyes[0][0] < eyes[1][0] and mouth[0][0] < mouth[1][0]  # left before right
        assert eyes[:, 1].max() < face.landmarks[2][1] < mouth[:, 1].min()  # eyes above nose above mouth


def test_every_shared_crop_is_one_face_bare_and_on_a_canvas(detector):
    """Measured: all 61 bare 160x160 crops give exactly one face; so do the crops padded on noise."""
    from PIL import Image

    paths = sorted(shared_folder("faces").glob("*.png"))
    assert len(paths) == 61
    for k, path in enumerate(paths[::6]):
        crop = np.asarray(Image.open(path).convert("RGB"))
        assert len(detector.detect(crop).faces) == 1, path.name
        faces = detector.detect(face_on_canvas(crop, seed=k)).faces
        assert len(faces) == 1, path.name
        assert boxes_on_crops([faces[0].box], {"crop": (80, 100, 240, 260)})


def test_noise_and_flat_images_have_no_face(detector):
    rng = np.random.default_rng(5)
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).faces == []
    assert detector.detect(np.full((50, 50, 3), 200, np.uint8)).faces == []
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)).faces == []  # below P-Net's cell: no scale at all


def test_pyramid_and_nms():
    scales = pyramid_scales(480, 640, DetectorConfig())
    assert scales[0] == pytest.approx(12 / 20) and all(b / a == pytest.approx(0.709) for a, b in zip(scales, scales[1:]))
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * 0.709
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], float)
    assert nms(boxes, np.array([0.9, 0.95, 0.5, 0.8]), 0.5).tolist() == [1, 3, 2]
    assert nms(boxes, np.array([0.9, 0.95, 0.5, 0.8]), 0.5, mode="min").tolist() == [1, 2]



class SaturatedNets:
    """Fake nets: P-Net proposes two overlapping cells (x 0 and 1 of the first scale) whose face
    probability is 1.0 in float32 for both, the second the surer one (its background probability is
    ten times smaller, as a logit 2.3 higher gives); R- and O-Net accept every crop unchanged."""

    def __init__(self):
        self.calls = 0

    def run(self, batch):
        n, w, h, _ = batch.shape  # the nets see the image transposed (x axis first)
        if w == h == 24 or w == h == 48:  # R-/O-Net
            prob = np.tile(np.array([0.0, 1.0], np.float32), (n, 1))
            outputs = [prob, np.zeros((n, 4), np.float32)]
            return outputs + [np.tile(np.linspace(0.2, 0.8, 10, dtype=np.float32), (n, 1))] if w == 48 else outputs
        self.calls += 1
        prob = np.zeros((1, (w - 12) // 2 + 1, (h - 12) // 2 + 1, 2), np.float32)
        prob[..., 0] = 1
        if self.calls == 1:
            prob[0, 0, 0] = [1e-7, 1.0]
            prob[0, 1, 0] = [1e-8, 1.0]
        return [prob, np.zeros(prob.shape[:3] + (4,), np.float32)]


def test_saturated_probabilities_are_ranked_by_their_log_odds():
    """A clear face's probability rounds to 1.0 in float32 on many proposals: ranking by it alone lets a
    runtime's last bit choose which box NMS keeps (measured: OpenCV-DNN's P-Net gave 0.99999988 where
    TensorFlow gave 1.0, and the released pipeline's box moved to IoU 0.92). The log-odds, from the
    softmax's small background probability, still order them: the surer proposal wins either way round."""
    nets = SaturatedNets()
    faces = MtcnnDetector(nets, nets, nets).detect(np.full((50, 50, 3), 128, np.uint8)).faces  # scales 30, 22, 16 px
    assert len(faces) == 1
    scale = 12 / 20
    assert faces[0].box[0] == pytest.approx(2 / scale) and faces[0].score == 1.0  # cell x = 1, not x = 0

    from facecvt.pipeline.detect import face_logit

    logits = face_logit(np.array([[1e-7, 1.0], [1e-8, 1.0], [0.3, 0.7], [0.7, 0.3], [0.0, 1.0]], np.float32))
    assert logits[1] > logits[0] > logits[2] > logits[3] and np.isfinite(logits).all()
    assert logits[2] == pytest.approx(np.log(0.7 / 0.3))

def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = TEMPLATE * 100
    dst = src @ (scale * rotation).T + shift
    assert np.allclose(similarity_transform(src, dst), np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)


def test_alignments_give_the_input_size(detector):
    canvas, _ = four_faces_canvas()
    face = detector.detect(canvas).faces[0]
    for method in ("similarity", "margin_crop"):
        assert align(canvas, face.box, face.landmarks, 160, method).shape == (160, 160, 3)
    with pytest.raises(FacecvtError, match="did you mean"):
        align(canvas, face.box, face.landmarks, 160, "similarty")


def test_bad_detector_settings_are_named():
    with pytest.raises(FacecvtError, match="12-pixel"):
        DetectorConfig(min_face_size=8).check()
    with pytest.raises(FacecvtError, match="factor"):
        DetectorConfig(scale_factor=1.2).check()


def test_missing_mtcnn_weights_are_bad_input(tmp_path):
    from facecvt.workflows.detector_graphs import tensorflow_detector_nets

    with pytest.raises(FacecvtError, match="det1.npy"):
        tensorflow_detector_nets(tmp_path)
    with pytest.raises(FacecvtError, match="det1.npy"):
        tensorflow_detector_nets(tmp_path / "absent")
    np.save(tmp_path / "det1.npy", np.array([1, 2, 3], dtype=object), allow_pickle=True)
    with pytest.raises(FacecvtError, match="cannot read MTCNN weights|not an MTCNN weight file"):
        tensorflow_detector_nets(tmp_path)


@pytest.mark.slow
def test_embed_command_on_a_canvas_and_bare_crops(facenet_onnx, tmp_path):
    """`facecvt embed`: four faces with 512-D unit vectors; --crop embeds a crop whole, and the
    aligned face of a crop padded onto a canvas is the same person (squared L2 well under 1)."""
    from click.testing import CliRunner
    from PIL import Image

    from facecvt.cli import main

    canvas, crops = four_faces_canvas()
    Image.fromarray(canvas).save(tmp_path / "canvas.png")
    crop = np.asarray(Image.open(shared_folder("faces") / "img20.png").convert("RGB"))
    Image.fromarray(face_on_canvas(crop)).save(tmp_path / "padded.png")
    result = CliRunner().invoke(main, ["embed", str(facenet_onnx), str(tmp_path / "canvas.png"),
                                       str(tmp_path / "padded.png"), "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["backend"] == "onnxruntime" and report["pipeline"]["alignment"] == "similarity"
    canvas_faces, padded_faces = report["images"][0]["faces"], report["images"][1]["faces"]
    assert sorted(boxes_on_crops([f["box"] for f in canvas_faces], crops)) == sorted(crops)
    vectors = np.array([f["vector"] for f in canvas_faces])
    assert vectors.shape == (4, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    direct = CliRunner().invoke(main, ["embed", str(facenet_onnx), str(shared_folder("faces") / "img20.png"),
                                       "--crop", "--json", str(tmp_path / "c.json")])
    assert direct.exit_code == 0, direct.output
    whole = np.array(json.loads((tmp_path / "c.json").read_text())["images"][0]["faces"][0]["vector"])
    assert ((whole - np.array(padded_faces[0]["vector"])) ** 2).sum() < 0.6
    bad = CliRunner().invoke(main, ["embed", str(facenet_onnx), str(tmp_path / "nothere.png")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


class GraphNet:
    """A detector net over a frozen GraphDef run by a bare TensorFlow session, outputs fed back in the
    detector's order (prob, box[, landmarks]): independent of facecvt's runners."""

    def __init__(self, net: str, graph_def, outputs):
        from facecvt.core.tf_env import import_tf

        tf = import_tf()
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=graph)
        self.input, self.outputs = f"{net}/input:0", [f"{o}:0" for o in outputs]

    def run(self, batch):
        return self.session.run(self.outputs, {self.input: batch})


def test_the_pipeline_nets_are_runners_of_the_mtcnn_sample_graphs(detector, mtcnn_nets):
    """The pipeline's nets are TensorFlow runners of `facecvt sample mtcnn`'s graphs, mapped by output
    name; they find the same faces as the graphs run directly, and a runner whose outputs come in
    another order (as an export may give them) is mapped back."""
    from facecvt.pipeline.detector_nets import DetectorRunner
    from facecvt.samples.mtcnn import OUTPUTS, mtcnn_graph_def

    assert all(net.runner.backend == "tensorflow" for net in mtcnn_nets.values())
    nets = {n: GraphNet(n, mtcnn_graph_def(n, shared_folder("mtcnn")), OUTPUTS[n])
            for n in ("pnet", "rnet", "onet")}
    canvas, _ = four_faces_canvas()
    theirs = MtcnnDetector(nets["pnet"], nets["rnet"], nets["onet"]).detect(canvas).faces
    ours = detector.detect(canvas).faces
    assert len(theirs) == len(ours) == 4
    order = lambda f: f.box[0] + 10 * f.box[1]  # noqa: E731
    for a, b in zip(sorted(ours, key=order), sorted(theirs, key=order)):
        assert np.array_equal(a.box, b.box) and np.array_equal(a.landmarks, b.landmarks)
        assert a.score == b.score

    class Reversed:  # an O-Net runner with its outputs renamed and reversed
        path, backend = "onet.x", "x"
        output_names = ["onet_conv6_3_conv6_3:0", "Identity_1", "onet_prob1"]

        def run(self, batch):
            return list(reversed(mtcnn_nets["onet"].runner.run(batch)))

    names = {"Identity_1": "onet/conv6-2/conv6-2"}
    batch = np.random.default_rng(0).normal(size=(3, 48, 48, 3)).astype(np.float32)
    for a, b in zip(DetectorRunner("onet", Reversed(), names).run(batch), mtcnn_nets["onet"].run(batch)):
        assert np.array_equal(a, b)
    with pytest.raises(FacecvtError, match="not an MTCNN rnet"):
        DetectorRunner("rnet", Reversed())


def test_spec_from_a_bundle_manifest(tmp_path):
    """An export bundle gives its artifact (ONNX Runtime first, or the one --backend names); a manifest
    `pipeline` block gives the whole spec."""
    from facecvt.pipeline.face_pipeline import PipelineConfig
    from facecvt.pipeline.load import PipelineSpec, spec_from_source

    artifacts = [{"backend": b, "precision": "fp32", "files": [{"file": f}], "preprocessing": {"mode": "prewhiten"}}
                 for b, f in (("opencv", "m.pb"), ("litert", "m.tflite"), ("onnxruntime", "m.onnx"))]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    spec = spec_from_source(tmp_path)
    assert (spec.embedder.name, spec.backend, spec.config.preprocess) == ("m.onnx", "onnxruntime", "prewhiten")
    assert spec_from_source(tmp_path, backend="tflite").embedder.name == "m.tflite"
    with pytest.raises(FacecvtError, match="no coreml artifact"):
        spec_from_source(tmp_path, backend="coreml")
    record = PipelineSpec(tmp_path / "m.onnx", "onnxruntime", tmp_path, PipelineConfig(alignment="margin_crop")).to_dict()
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts, "pipeline": record}))
    again = spec_from_source(tmp_path)
    assert again.config.alignment == "margin_crop" and again.config.detector.thresholds == (0.6, 0.7, 0.7)
    assert again.to_dict() == record
