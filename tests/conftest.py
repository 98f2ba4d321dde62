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
