"""Pairs readers (CSV, LFW pairs.txt) and verification metrics against hand-computed cases."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import require_shared
from facecvt.core.errors import FacecvtError
from facecvt.validate import metrics
from facecvt.validate.pairs import detect_format, read_pairs

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACECVT_FACES", REPO.parent / "shared" / "faces"))
LFW_PAIRS = REPO.parent / "shared" / "lfw" / "pairs.txt"


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- metrics: hand-computed cases -------------------------------------------------------------

def test_perfect_separation():
    dist = [0.1, 0.2, 0.3, 1.0, 1.5, 2.0]
    same = [True, True, True, False, False, False]
    result = metrics.verification_metrics(dist, same)
    assert result["accuracy"] == 1.0
    assert result["auc"] == 1.0
    assert result["eer"] == 0.0
    assert result["threshold"] == pytest.approx(0.65)  # midpoint of the gap 0.3 .. 1.0


def test_known_roc():
    # sorted: 0.1 S, 0.3 D, 0.4 S, 0.5 D, 0.6 S, 0.9 D
    dist = np.array([0.1, 0.4, 0.6, 0.3, 0.5, 0.9])
    same = np.array([True, True, True, False, False, False])
    far, tar, thresholds = metrics.roc_curve(dist, same)
    np.testing.assert_allclose(far, [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(thresholds[1:], [0.1, 0.3, 0.4, 0.5, 0.6, 0.9])
    assert metrics.roc_auc(dist, same) == pytest.approx(6 / 9)  # 3 + 2 + 1 ordered (same, diff) pairs of 9
    eer, eer_threshold = metrics.equal_error_rate(dist, same)
    assert eer == pytest.approx(1 / 3) and eer_threshold == pytest.approx(0.4)
    threshold, accuracy = metrics.best_threshold(dist, same)
    assert accuracy == pytest.approx(4 / 6) and threshold == pytest.approx(0.2)  # first of three 4/6 splits


def test_eer_is_interpolated():
    # sorted: 0.1 S, 0.15 D, 0.2 S, 0.3 D, 0.4 D, 0.5 D: FAR-FRR goes -0.25 at 0.15 -> +0.25 at 0.2
    dist = [0.1, 0.2, 0.15, 0.3, 0.4, 0.5]
    same = [True, True, False, False, False, False]
    eer, threshold = metrics.equal_error_rate(dist, same)
    assert eer == pytest.approx(0.25) and threshold == pytest.approx(0.175)


def test_auc_counts_ties_half():
    assert metrics.roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert metrics.roc_auc([0.5, 0.5, 0.7], [True, False, False]) == 0.75


def test_kfold_picks_threshold_on_the_other_folds():
    # fold A: same 0.1, diff 0.9; fold B: same 0.5, diff 0.6.
    # Train on B -> 0.55 -> A all right (1.0). Train on A -> 0.5 -> B: 0.5 < 0.5 is false -> 0.5.
    dist = [0.1, 0.9, 0.5, 0.6]
    same = [True, False, True, False]
    mean, std, thresholds = metrics.kfold_accuracy(dist, same, [np.array([0, 1]), np.array([2, 3])])
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.25)
    assert thresholds == pytest.approx([0.55, 0.5])
    assert metrics.best_threshold(dist, same)[1] == 1.0  # all pairs at once would say 1.0


def test_decision_agreement():
    # decisions at 0.6: ref T F T, cand T T F
    assert metrics.decision_agreement([0.1, 0.9, 0.5], [0.2, 0.4, 0.7], 0.6) == pytest.approx(1 / 3)
    assert metrics.decision_agreement([0.1, 0.9], [0.1, 0.9], 0.6) == 1.0


def test_pair_distances():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    np.testing.assert_allclose(metrics.pair_distances(emb, np.array([0, 0, 2]), np.array([1, 2, 2])),
                               [2.0, 0.8, 0.0])


distances = st.lists(st.tuples(st.integers(0, 20).map(lambda v: v / 10), st.booleans()), min_size=2, max_size=40)


@settings(max_examples=60, deadline=None)
@given(distances)
def test_auc_and_best_threshold_match_brute_force(items):
    dist = np.array([d for d, _ in items])
    same = np.array([s for _, s in items])
    if same.all() or not same.any():
        assert np.isnan(metrics.roc_auc(dist, same))
    else:
        ordered = [(1.0 if s < d else 0.5 if s == d else 0.0) for s in dist[same] for d in dist[~same]]
        assert metrics.roc_auc(dist, same) == pytest.approx(np.mean(ordered))
    threshold, accuracy = metrics.best_threshold(dist, same)
    grid = np.concatenate([dist, [dist.max() + 1]])
    assert accuracy == pytest.approx(max(np.mean((dist < t) == same) for t in grid))
    assert metrics.accuracy_at(dist, same, threshold) == pytest.approx(accuracy)
    eer, _ = metrics.equal_error_rate(dist, same)
    assert 0.0 <= eer <= 1.0


# --- pairs readers -------------------------------------------------------------------------------

def test_detect_format():
    assert detect_format("10\t300\nA\t1\t2\n") == "lfw"
    assert detect_format("1100\nA 1 2\n") == "lfw"
    assert detect_format("left,right,same\na.png,b.png,1\n") == "csv"
    with pytest.raises(FacecvtError, match="cannot tell the pairs format"):
        detect_format("hello world\n")


@pytest.fixture(scope="module")
def lfw_tree(tmp_path_factory):
    """Every image /work/shared/lfw/pairs.txt names, as a tiny PNG laid out as LFW."""
    require_shared(LFW_PAIRS)
    root = tmp_path_factory.mktemp("lfw")
    png = _tiny_png()
    names = set()
    for line in LFW_PAIRS.read_text().splitlines()[1:]:
        fields = line.split("\t")
        names.update([(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3
                     else [(fields[0], fields[1]), (fields[2], fields[3])])
    for name, number in names:
        folder = root / name
        folder.mkdir(exist_ok=True)
        (folder / f"{name}_{int(number):04d}.png").write_bytes(png)
    return root, len(names)


def test_lfw_pairs_txt(lfw_tree):
    root, n_images = lfw_tree
    pairs = read_pairs(LFW_PAIRS, root)
    assert pairs.format == "lfw" and len(pairs) == 6000
    assert len(pairs.folds) == 10
    for k, fold in enumerate(pairs.folds):
        np.testing.assert_array_equal(fold, np.arange(600 * k, 600 * (k + 1)))
        labels = pairs.labels[fold]
        assert labels[:300].all() and not labels[300:].any()
    left, right, same = pairs.pairs[0]
    assert (left, right, same) == (root / "Abel_Pacheco/Abel_Pacheco_0001.png",
                                   root / "Abel_Pacheco/Abel_Pacheco_0004.png", True)
    left, right, same = pairs.pairs[300]
    assert (left.name, right.name, same) == ("Abdel_Madi_Shabneh_0001.png", "Dean_Barker_0001.png", False)
    unique = pairs.unique_images()
    assert len(unique) == n_images
    li, ri = pairs.index_pairs(unique)
    assert unique[li[0]] == pairs.pairs[0][0] and unique[ri[-1]] == pairs.pairs[-1][1]


def test_lfw_missing_images_are_listed(tmp_path):
    require_shared(LFW_PAIRS)
    with pytest.raises(FacecvtError) as error:
        read_pairs(LFW_PAIRS, tmp_path)
    message = str(error.value)
    assert "7701 of the 7701 images" in message and "Abel_Pacheco_0001.jpg" in message
    assert "and 7696 more" in message and "--images" in message


def test_lfw_jpg_single_fold_and_bad_count(tmp_path):
    for name, n in [("Ann", 1), ("Ann", 2), ("Bob", 1)]:
        (tmp_path / name).mkdir(exist_ok=True)
        Image.new("RGB", (2, 2)).save(tmp_path / name / f"{name}_{n:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert pairs.folds is None and pairs.labels.tolist() == [True, False]
    assert pairs.pairs[1][1] == tmp_path / "Bob" / "Bob_0001.jpg"
    (tmp_path / "short.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    with pytest.raises(FacecvtError, match="header says 2 folds x 2 x 1 pairs = 4 lines, found 2"):
        read_pairs(tmp_path / "short.txt")


def test_csv_labels_and_errors(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    (tmp_path / "p.csv").write_text("right,left,same\nb.png,a.png,true\na.png,b.png,0\n")
    pairs = read_pairs(tmp_path / "p.csv")
    assert pairs.pairs[0] == (tmp_path / "a.png", tmp_path / "b.png", True)
    assert pairs.labels.tolist() == [True, False] and pairs.folds is None
    (tmp_path / "bad.csv").write_text("left,right,same\na.png,b.png,maybe\n")
    with pytest.raises(FacecvtError, match="line 2: label 'maybe'"):
        read_pairs(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("left,right,same\na.png,c.png,1\n")
    with pytest.raises(FacecvtError, match=r"1 of the 2 images .* missing: .*c\.png"):
        read_pairs(tmp_path / "missing.csv")
    with pytest.raises(FacecvtError, match="does not exist"):
        read_pairs(tmp_path / "nope.csv")


def test_shared_faces_pairs_csv():
    require_shared(FACES / "pairs.csv")
    pairs = read_pairs(FACES / "pairs.csv", FACES)
    assert pairs.format == "csv" and len(pairs) == 300 and int(pairs.labels.sum()) == 38
    assert pairs.folds is None
    assert all(p.is_file() and p.parent == FACES for p in pairs.unique_images())
