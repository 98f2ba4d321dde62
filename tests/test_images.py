"""Image listing, loading, resizing, preprocessing and the streaming/random batch iterators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from facecvt.core.errors import FacecvtError
from facecvt.core.images import (iter_image_batches, list_images, load_image, prewhiten, preprocess,
                                     random_batches)

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACECVT_FACES", REPO.parent / "shared" / "faces"))


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 77)], -1).astype(np.uint8)


def test_list_images_sorted_filtered_recursive(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.jpeg", "sub/d.png"):
        _save(tmp_path / name, _gradient(4, 4))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.jpeg"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.jpg", "b.PNG", "c.jpeg", "sub/d.png"]


def test_list_images_errors(tmp_path):
    with pytest.raises(FacecvtError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(FacecvtError, match=r"no PNG/JPEG images in .*pass another folder"):
        list_images(tmp_path)
    _save(tmp_path / "nested" / "x.png", _gradient(2, 2))
    with pytest.raises(FacecvtError, match="1 in its subfolders; read the folder recursively"):
        list_images(tmp_path)
    with pytest.raises(FacecvtError, match="is a file, not a folder"):
        list_images(tmp_path / "nested" / "x.png")


def test_load_converts_to_rgb_and_keeps_size(tmp_path):
    rgb = _gradient(5, 7)
    np.testing.assert_array_equal(load_image(_save(tmp_path / "rgb.png", rgb), (5, 7)), rgb)
    gray = load_image(_save(tmp_path / "gray.png", np.full((3, 3), 9, np.uint8)))
    assert gray.shape == (3, 3, 3) and gray.dtype == np.uint8 and (gray == 9).all()
    rgba = np.dstack([rgb, np.full((5, 7), 255, np.uint8)])
    np.testing.assert_array_equal(load_image(_save(tmp_path / "rgba.png", rgba)), rgb)


def test_resize_bilinear_to_model_size(tmp_path):
    path = _save(tmp_path / "big.png", _gradient(200, 180))
    image = load_image(path, (160, 160))
    assert image.shape == (160, 160, 3)
    expected = np.asarray(Image.open(path).convert("RGB").resize((160, 160), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(image, expected)
    # a smooth ramp stays a ramp: red rises left to right, green top to bottom, blue constant
    assert (np.diff(image[80, :, 0].astype(int)) >= 0).all() and (np.diff(image[:, 80, 1].astype(int)) >= 0).all()
    assert (image[..., 2] == 77).all()
    flat = load_image(_save(tmp_path / "flat.png", np.full((10, 30, 3), 200, np.uint8)), (4, 6))
    assert flat.shape == (4, 6, 3) and (flat == 200).all()


def test_preprocess_fixed_and_none():
    batch = np.array([0, 127, 128, 255], np.uint8).reshape(1, 2, 2, 1).repeat(3, -1)
    fixed = preprocess(batch, "fixed")
    assert fixed.dtype == np.float32
    np.testing.assert_array_equal(fixed[0, :, :, 0].ravel(), [-127.5 / 128, -0.5 / 128, 0.5 / 128, 127.5 / 128])
    none = preprocess(batch, "none")
    assert none.dtype == np.float32 and none[0, 1, 1, 2] == 255.0


def test_preprocess_prewhiten_per_image():
    batch = np.zeros((2, 1, 2, 3), np.uint8)
    batch[0, 0, 1] = 2          # image 0: values 0,0,0,2,2,2 -> mean 1, std 1
    batch[1] = 5                # image 1: constant -> std 0, adjusted to 1/sqrt(6)
    out = preprocess(batch, "prewhiten")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0].ravel(), [-1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(out[1], 0.0)
    # facenet.prewhiten, written out, on a random image
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.float64)
    expected = (image - image.mean()) / max(image.std(), 1.0 / np.sqrt(image.size))
    np.testing.assert_allclose(prewhiten(image[None])[0], expected, rtol=1e-6, atol=1e-6)


def test_preprocess_unknown_mode():
    with pytest.raises(FacecvtError, match="unknown preprocessing 'prewhite'.*did you mean: prewhiten"):
        preprocess(np.zeros((1, 1, 1, 3), np.uint8), "prewhite")


def test_corrupt_image_names_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(FacecvtError, match=r"cannot decode image .*bad\.png.*replace or remove"):
        load_image(bad)
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FacecvtError, match=r"truncated\.png"):
        load_image(truncated)


def test_iter_image_batches_streams(tmp_path):
    paths = [_save(tmp_path / f"{i:02d}.png", np.full((6, 6, 3), 10 * i, np.uint8)) for i in range(5)]
    batches = list(iter_image_batches(paths, (4, 4), "fixed", batch_size=2))
    assert [len(chunk) for chunk, _ in batches] == [2, 2, 1]
    assert [chunk for chunk, _ in batches] == [paths[0:2], paths[2:4], paths[4:5]]
    stacked = np.concatenate([b for _, b in batches])
    assert stacked.shape == (5, 4, 4, 3) and stacked.dtype == np.float32
    np.testing.assert_allclose(stacked[:, 0, 0, 0], (10 * np.arange(5) - 127.5) / 128)
    # lazy: a corrupt file in the second batch fails only when that batch is reached
    (tmp_path / "02.png").write_bytes(b"garbage")
    iterator = iter_image_batches(paths, (4, 4), "fixed", batch_size=2)
    next(iterator)
    with pytest.raises(FacecvtError, match=r"02\.png"):
        next(iterator)


def test_iter_image_batches_dynamic_size_must_agree(tmp_path):
    paths = [_save(tmp_path / "a.png", _gradient(4, 4)), _save(tmp_path / "b.png", _gradient(5, 4))]
    with pytest.raises(FacecvtError, match="resize the images to one size"):
        list(iter_image_batches(paths, (None, None), "none"))


def test_random_batches_seeded_and_batch_independent():
    small = [b for _, b in random_batches(7, (5, 5, 3), seed=3, batch_size=3)]
    big = [b for _, b in random_batches(7, (5, 5, 3), seed=3, batch_size=32)]
    assert [b.shape[0] for b in small] == [3, 3, 1] and big[0].shape == (7, 5, 5, 3)
    np.testing.assert_array_equal(np.concatenate(small), big[0])
    assert big[0].dtype == np.float32 and big[0].min() >= -1.0 and big[0].max() < 1.0
    assert big[0].std() > 0.5  # spread over the range, like preprocessed images
    other = next(random_batches(7, (5, 5, 3), seed=4))[1]
    assert not np.array_equal(other, big[0])
    names = [n for chunk, _ in random_batches(4, (1, 1, 3), seed=0, batch_size=3) for n in chunk]
    assert names == ["random[0]", "random[1]", "random[2]", "random[3]"]
    with pytest.raises(FacecvtError, match="at least 1"):
        next(random_batches(0, (1, 1, 3)))


def test_shared_faces_load():
    require_shared(FACES)
    paths = list_images(FACES)
    assert len(paths) == 61
    chunk, batch = next(iter_image_batches(paths, (96, 96), "prewhiten", batch_size=4))
    assert batch.shape == (4, 96, 96, 3)
    np.testing.assert_allclose(batch.reshape(4, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(batch.reshape(4, -1).std(1), 1, atol=1e-4)
