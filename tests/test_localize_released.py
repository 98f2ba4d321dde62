"""`verify --localize` on the released FaceNet: for every backend, a 3 % fault edited into one mid-network
conv's weights in the artifact's own file is named as the first divergence, the clean export has none, and
an export reading BGR is localised at the first convolution."""

from __future__ import annotations

import shutil

import pytest

from _broken_artifacts import broken_copy
from conftest import faces_folder
from facecvt.validate.runners.tensorflow import TensorFlowRunner
from facecvt.validate.verify import InputSpec, verify

pytestmark = pytest.mark.slow

TARGETS = {"onnxruntime": "onnx", "litert": "tflite", "opencv": "opencv", "coreml": "coreml"}


@pytest.fixture(scope="session")
def two_faces(tmp_path_factory):
    """2 of the shared faces (enough to localise; every input costs a run of each runtime); the shared
    data must be there."""
    source = faces_folder()
    faces = sorted(source.glob("*.png"))[:2]
    assert len(faces) == 2, f"the shared face crops are missing from {source}"
    folder = tmp_path_factory.mktemp("two_faces")
    for face in faces:
        shutil.copy(face, folder / face.name)
    return folder


@pytest.fixture(scope="session")
def released_reference(released_raw_pb, released_model, released_frozen):
    with TensorFlowRunner(released_raw_pb, model=released_model, clean=released_frozen.frozen) as runner:
        yield runner


def _scope(layer: str) -> str:
    """'.../Conv2d_0a_1x1/Conv2D' -> '.../Conv2d_0a_1x1/': the conv and the BN, bias and relu folded into it."""
    return layer.rsplit("/", 1)[0] + "/"


@pytest.mark.parametrize("backend", list(TARGETS))
def test_localize_names_the_faulty_conv_and_nothing_in_the_clean_export(backend, released_export, released_frozen,
                                                                        released_reference, two_faces, tmp_path):
    clean = released_export(TARGETS[backend]).path
    faults = ["scaled", "bgr"] if backend == "onnxruntime" else ["scaled"]
    broken = {how: broken_copy(clean, released_frozen.frozen, how, tmp_path / f"{how}_{clean.name}")
              for how in faults}
    candidates = [(backend, clean)] + [(backend, path) for path, _ in broken.values()]
    report = verify(released_reference, candidates, InputSpec(images=two_faces), localize=True)
    good, *bad = report["candidates"]
    assert good["pass"] and good["localize"]["first_divergence"] is None and good["localize"]["inputs"] == 2
    assert good["localize"]["matched"] >= 150 and good["localize"]["total"] == 473
    for entry, (how, (_, conv)) in zip(bad, broken.items()):
        assert not entry["pass"], how
        first = entry["localize"]["first_divergence"]
        assert first is not None and first["layer"].startswith(_scope(conv)), (how, first)
        assert first["rel"] > entry["localize"]["limit"]
    if "bgr" in broken:
        assert broken["bgr"][1] == "InceptionResnetV1/Conv2d_1a_3x3/Conv2D"  # the first convolution
