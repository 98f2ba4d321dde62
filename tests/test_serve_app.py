"""The HTTP API in-process (FastAPI's TestClient): real MTCNN nets, a small pixel embedder, a real index.

Fast checks of the API's contract; tests/test_serve.py runs the real server with the released FaceNet.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import face_on_canvas, four_faces_canvas, shared_folder
from fastapi.testclient import TestClient

from facecvt.pipeline.face_pipeline import FacePipeline
from facecvt.pipeline.index import FaceIndex
from facecvt.workflows.serve import ServeOptions, create_app


class PixelEmbedder:
    """A stand-in embedder: the aligned face pooled to 8x8 RGB, L2-normalised (192-D)."""

    input_shape = (None, 160, 160, 3)

    def embed(self, batch):
        pooled = batch.reshape(len(batch), 8, 20, 8, 20, 3).mean(axis=(2, 4)).reshape(len(batch), -1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline(mtcnn_nets):
    pipe = FacePipeline(mtcnn_nets["pnet"], mtcnn_nets["rnet"], mtcnn_nets["onet"], PixelEmbedder())
    pipe.model, pipe.backend = "pixels", "numpy"
    return pipe


@pytest.fixture(scope="module")
def crop():
    from PIL import Image

    return np.asarray(Image.open(shared_folder("faces") / "img20.png").convert("RGB"))


def client_for(pipeline, folder, **options):
    return TestClient(create_app(pipeline, FaceIndex(folder, 192), ServeOptions(**options)))


def test_register_search_delete_and_reopen(pipeline, crop, tmp_path):
    with client_for(pipeline, tmp_path) as client:
        assert client.get("/health").json()["faces"] == 0
        registered = client.post("/register", files={"file": ("a.png", png(face_on_canvas(crop)))},
                                 data={"name": "Ada"}).json()
        assert registered["name"] == "Ada" and len(registered["faces"]) == 1
        face_id = registered["faces"][0]["id"]
        found = client.post("/search", files={"file": ("b.png", png(face_on_canvas(crop, seed=3)))},
                            data={"k": "5"}).json()
        assert found[0]["matches"] == [{"name": "Ada", "id": face_id, "distance": pytest.approx(0, abs=0.05)}]
    with client_for(pipeline, tmp_path) as client:  # the same folder, as after a restart
        assert client.get("/health").json()["faces"] == 1
        assert client.delete(f"/faces/{face_id}").json() == {"id": face_id, "name": "Ada", "deleted": True}
        assert client.delete(f"/faces/{face_id}").status_code == 404
        assert client.post("/search", files={"file": ("b.png", png(face_on_canvas(crop)))}).json()[0]["matches"] == []


def test_vectorize_shape(pipeline):
    canvas, _ = four_faces_canvas()
    with client_for(pipeline, None) as client:
        faces = client.post("/vectorize", files={"file": ("c.png", png(canvas))}).json()
    assert len(faces) == 4
    assert all(set(f) == {"box", "score", "landmarks", "vector"} and len(f["vector"]) == 192 for f in faces)


def test_bad_requests_are_one_line_4xx(pipeline, crop):
    good = png(face_on_canvas(crop))
    with client_for(pipeline, None, max_upload_bytes=1_000_000, max_pixels=1_000_000) as client:
        answers = [
            client.post("/vectorize", files={"file": ("x.png", b"not an image")}),
            client.post("/vectorize", files={"file": ("x.png", good[:len(good) // 2])}),
            client.post("/vectorize", files={"file": ("x.png", png(np.zeros((1100, 1000, 3), np.uint8)))}),
            client.post("/vectorize", files={"file": ("x.bin", np.random.default_rng(0).bytes(1_200_000))}),
            client.post("/vectorize"),
            client.post("/register", files={"file": ("x.png", good)}),
            client.post("/search", files={"file": ("x.png", good)}, data={"k": "-1"}),
            client.post("/search", files={"file": ("x.png", good)}, data={"k": "1.5"}),
            client.delete("/faces/nope"),
        ]
        for answer in answers:
            assert 400 <= answer.status_code < 500, answer.text
            assert "\n" not in answer.json()["error"] and "internal" not in answer.json()["error"]
        assert [a.status_code for a in answers[:4]] == [400, 400, 413, 413]
        assert client.post("/vectorize", files={"file": ("x.png", good)}).status_code == 200
