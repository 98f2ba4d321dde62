"""`facecvt serve BUNDLE` in a subprocess on 127.0.0.1, talked to with httpx: the API, bad requests, restarts.

BUNDLE is the released pipeline bundle (tests/conftest.py: the released FaceNet and ../shared/mtcnn exported
to every target), served on its default backend (ONNX Runtime, detector and embedder): issue 15's "done when".
"""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO, boxes_on_crops, face_on_canvas, faces_canvas, facecvt_env, shared_folder


pytestmark = pytest.mark.slow


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m facecvt serve BUNDLE --index DIR` on a free port; start, kill, start again."""

    def __init__(self, model: Path, index_dir: Path, log: Path, *extra: str):
        self.model, self.index_dir, self.log, self.extra = model, index_dir, log, extra
        self.process = None
        self.url = ""

    def start(self, timeout: float = 240) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facecvt", "serve", str(self.model), "--port", str(port),
             "--index", str(self.index_dir), *self.extra],
            env=facecvt_env(), stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the server did not answer in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    def post(self, path: str, image_bytes: bytes | None = None, filename="face.png", **fields):
        files = {"file": (filename, image_bytes, "application/octet-stream")} if image_bytes is not None else None
        return httpx.post(self.url + path, files=files, data={k: str(v) for k, v in fields.items()} or None,
                          timeout=120)


@pytest.fixture(scope="module")
def server(released_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    running = Server(released_bundle, folder / "index", folder / "server.log", "--max-upload-mb", "2")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def crops():
    from PIL import Image

    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in shared_folder("faces").glob("*.png")}


def identities(pairs):
    """Person of each image: the connected components of the same-person pairs."""
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for left, right in pairs:
        parent[find(left)] = find(right)
    return find


def test_health_and_openapi(server):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["embedding_size"] == 512 and isinstance(health["faces"], int)
    assert health["backend"] == health["detector_backend"] == "onnxruntime"  # the bundle's nets, not TensorFlow's
    assert {k: Path(v).name for k, v in health["pipeline"]["detector_files"].items()} == \
        {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
    assert Path(health["model"]).name == "facenet_raw.onnx"
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/health", "/vectorize", "/register", "/search", "/faces/{face_id}"} <= set(paths)


# four different crops, 100-160 px, on a 640x480 grey image
FOUR_FACES = {"img1.png": (30, 40, 160), "img10.png": (420, 30, 130), "img20.png": (80, 300, 110),
              "img30.png": (430, 320, 140)}


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_vectorize_four_faces_on_their_crops(server):
    """Exactly four faces, one on each crop: its box's centre inside the crop, IoU with the crop >= 0.5
    (a crop is the face box enlarged by 20 %, so a face box covers ~0.7 of it: measured 0.67-0.76)."""
    canvas, crops = faces_canvas(FOUR_FACES)
    answer = server.post("/vectorize", jpeg_bytes(canvas), filename="canvas.jpg")
    assert answer.status_code == 200, answer.text
    faces = answer.json()
    assert len(faces) == 4
    on = {}
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        inside = [n for n, r in crops.items() if r[0] <= centre[0] < r[2] and r[1] <= centre[1] < r[3]]
        assert len(inside) == 1, (face["box"], crops)
        on[inside[0]] = round(iou(face["box"], crops[inside[0]]), 3)
    print(f"\nIoU of each face box with its crop: {on}")
    assert sorted(on) == sorted(crops) and min(on.values()) >= 0.5, on
    for face in faces:
        assert len(face["landmarks"]) == 5 and len(face["vector"]) == 512 and face["score"] > 0.99
        assert abs(np.linalg.norm(face["vector"]) - 1) < 1e-4


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, crops):
    good = png_bytes(face_on_canvas(crops["img20.png"]))
    jpeg = jpeg_bytes(face_on_canvas(crops["img20.png"]))
    huge = png_bytes(np.zeros((7000, 6000, 3), np.uint8))  # 42 MP of zeros: a small file, too many pixels
    assert len(huge) < 2 * 1024 * 1024
    cases = {
        "not an image": (server.post, ("/vectorize", b"hello, not a picture")),
        "truncated JPEG": (server.post, ("/vectorize", jpeg[: len(jpeg) // 2], "cut.jpg")),
        "empty file": (server.post, ("/vectorize", b"")),
        "over the upload limit": (server.post, ("/vectorize", os.urandom(3 * 1024 * 1024))),
        "over the pixel limit": (server.post, ("/vectorize", huge)),
        "a GIF": (server.post, ("/vectorize", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")),
        "missing file": (server.post, ("/vectorize", None)),
        "missing name": (server.post, ("/register", good)),
        "empty name": (lambda *a: server.post(*a, name="  "), ("/register", good)),
        "no face to register": (lambda *a: server.post(*a, name="nobody"),
                                ("/register", png_bytes(np.full((200, 200, 3), 90, np.uint8)))),
        "k = 0": (lambda *a: server.post(*a, k=0), ("/search", good)),
        "k = 101": (lambda *a: server.post(*a, k=101), ("/search", good)),
        "k not a number": (lambda *a: server.post(*a, k="three"), ("/search", good)),
        "unknown face id": (lambda *a: httpx.delete(server.url + "/faces/987654"), ()),
        "face id not a number": (lambda *a: httpx.delete(server.url + "/faces/abc"), ()),
    }
    for what, (call, args) in cases.items():
        answer = call(*args)
        assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
        message = answer.json()["error"]
        assert message and "\n" not in message and "internal" not in message, (what, message)
        after = server.post("/vectorize", good)
        assert after.status_code == 200 and len(after.json()) == 1, (what, after.text)
    assert server.process.poll() is None


def test_register_one_of_each_pair_and_search_with_the_other(server, crops):
    """Each crop padded onto a noise canvas; >= 95 % of the same-person pairs find the right name first
    (measured with the released weights: 38 / 38)."""
    with open(shared_folder("faces") / "pairs.csv") as handle:
        same = [(r["left"], r["right"]) for r in csv.DictReader(handle) if r["same"] == "1"]
    assert len(same) >= 30
    person = identities(same)
    registered = {}
    for k, left in enumerate(sorted({left for left, _ in same})):
        answer = server.post("/register", png_bytes(face_on_canvas(crops[left], seed=k)), name=person(left))
        assert answer.status_code == 200, answer.text
        faces = answer.json()["faces"]  # every face found, best score first
        assert boxes_on_crops([faces[0]["box"]], {"crop": (80, 100, 240, 260)}), (left, faces)
        registered[left] = faces[0]["id"]
        for extra in faces[1:]:  # measured: img14's lower edge on noise gives a second, 0.85 detection
            assert httpx.delete(f"{server.url}/faces/{extra['id']}").status_code == 200
    right_first = 0
    for k, (left, right) in enumerate(same):
        answer = server.post("/search", png_bytes(face_on_canvas(crops[right], seed=100 + k)), k=3)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert len(found) >= 1 and boxes_on_crops([found[0]["box"]], {"crop": (80, 100, 240, 260)})
        assert len(found[0]["matches"]) == 3
        distances = [m["distance"] for m in found[0]["matches"]]
        assert distances == sorted(distances)
        right_first += found[0]["matches"][0]["name"] == person(right)
    print(f"\nright name first: {right_first}/{len(same)} = {right_first / len(same):.3f} of the same-person pairs")
    assert right_first / len(same) >= 0.95, f"{right_first}/{len(same)} found the right name first"
    server.registered = registered


def test_restart_after_a_kill_keeps_every_acknowledged_face(server, crops):
    """SIGKILL right after an acknowledged registration, restart, SIGTERM, restart: every face is found."""
    before = httpx.get(server.url + "/health").json()["faces"]
    answer = server.post("/register", png_bytes(face_on_canvas(crops["img30.png"], seed=7)), name="late")
    assert answer.status_code == 200
    late_id = answer.json()["faces"][0]["id"]
    gone = httpx.delete(f"{server.url}/faces/{late_id}")
    assert gone.status_code == 200 and gone.json()["name"] == "late"
    answer = server.post("/register", png_bytes(face_on_canvas(crops["img30.png"], seed=8)), name="late")
    late_id = answer.json()["faces"][0]["id"]
    server.stop(signal.SIGKILL)  # no shutdown: the graph on disk is older than the table
    server.start()
    assert httpx.get(server.url + "/health").json()["faces"] == before + 1
    found = server.post("/search", png_bytes(face_on_canvas(crops["img30.png"], seed=9)), k=1).json()
    assert found[0]["matches"][0]["id"] == late_id and found[0]["matches"][0]["name"] == "late"
    server.stop()  # a clean stop saves the graph; the next start loads it as is
    server.start()
    assert httpx.get(server.url + "/health").json()["faces"] == before + 1
    registered = getattr(server, "registered", {})
    assert registered, "run with the pairs test: it registers the faces looked for here"
    for name, face_id in registered.items():  # every face registered before the two restarts
        match = server.post("/search", png_bytes(face_on_canvas(crops[name], seed=11)), k=1).json()[0]["matches"][0]
        assert match["id"] == face_id, (name, match)
