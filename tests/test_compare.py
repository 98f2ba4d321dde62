"""The streaming comparator: batch-by-batch results equal the all-at-once computation."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.core.errors import FacecvtError
from facecvt.validate.compare import (AbsDiffQuantile, EmbeddingComparator, Tolerances, cosine_similarity,
                                      squared_distances)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    ref = _unit(rng.normal(size=(100, 16))).astype(np.float32)
    cand = _unit(ref + rng.normal(scale=1e-3, size=ref.shape)).astype(np.float32)
    return ref, cand


def _feed(comparator: EmbeddingComparator, ref, cand, sizes) -> EmbeddingComparator:
    start = 0
    for size in sizes:
        comparator.update(ref[start:start + size], cand[start:start + size])
        start += size
    assert start == len(ref)
    return comparator


def _brute_dist_change(ref, cand, allowed=None) -> float:
    """max |d_ref - d_cand| over pairs i<j (optionally only where allowed[i, j]), by explicit differences."""
    ref, cand = ref.astype(np.float64), cand.astype(np.float64)
    d_ref = ((ref[:, None] - ref[None]) ** 2).sum(-1)
    d_cand = ((cand[:, None] - cand[None]) ** 2).sum(-1)
    mask = np.triu(np.ones(d_ref.shape, bool), 1) if allowed is None else np.triu(allowed, 1)
    return float(np.abs(d_ref - d_cand)[mask].max())


def test_streaming_equals_all_at_once(embeddings):
    ref, cand = embeddings
    result = _feed(EmbeddingComparator(), ref, cand, [7, 13, 1, 50, 29]).result()
    delta = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
    cos = (ref.astype(np.float64) * cand).sum(1) / (np.linalg.norm(ref.astype(np.float64), axis=1)
                                                    * np.linalg.norm(cand.astype(np.float64), axis=1))
    assert result["count"] == 100
    assert result["max_abs"] == delta.max()
    assert result["mean_abs"] == pytest.approx(delta.mean(), rel=1e-12)
    assert result["p99_exact"] and result["p99_abs"] == pytest.approx(np.percentile(delta, 99), rel=1e-12)
    assert result["min_cosine"] == pytest.approx(cos.min(), abs=1e-12)
    assert result["dist_exact"] and result["dist_pairs"] == 100 * 99 // 2
    assert result["max_dist_change"] == pytest.approx(_brute_dist_change(ref, cand), abs=1e-12)
    whole = EmbeddingComparator()
    whole.update(ref, cand)
    for key in ("max_abs", "mean_abs", "p99_abs", "min_cosine", "max_dist_change"):
        assert result[key] == pytest.approx(whole.result()[key], rel=1e-12, abs=1e-15)


def test_distance_window_beyond_limit(embeddings):
    ref, cand = embeddings
    ref, cand = ref[:30], cand[:30]
    # batches of 5, window of 10 rows: each batch meets itself and the two batches before it
    result = _feed(EmbeddingComparator(window_rows=10), ref, cand, [5] * 6).result()
    batch = np.arange(30) // 5
    allowed = np.abs(batch[:, None] - batch[None]) <= 2
    assert not result["dist_exact"]
    assert result["dist_pairs"] == 6 * 10 + 25 + 4 * 50
    assert result["dist_pairs"] == int(np.triu(allowed, 1).sum())
    assert result["max_dist_change"] == pytest.approx(_brute_dist_change(ref, cand, allowed), abs=1e-12)
    assert result["max_dist_change"] <= _brute_dist_change(ref, cand) + 1e-12


def test_histogram_quantile_precision():
    values = np.random.default_rng(2).lognormal(mean=-12, sigma=2, size=200_000)
    streaming = AbsDiffQuantile(exact_values=1000)
    for chunk in np.array_split(values, 37):
        streaming.add(chunk)
    assert not streaming.exact
    for q in (0.5, 0.9, 0.99):
        assert streaming.quantile(q) == pytest.approx(np.percentile(values, 100 * q), rel=0.006)
    zeros = AbsDiffQuantile(exact_values=0)
    zeros.add(np.zeros(1000))
    zeros.add(np.full(5, 0.5))
    assert zeros.quantile(0.99) == 0.0 and zeros.max == 0.5


def test_tolerance_defaults_and_overrides():
    assert Tolerances.for_precision("fp32") == Tolerances(atol=1e-4, min_cosine=0.99999, max_dist_change=None)
    assert Tolerances.for_precision("fp16").atol is None
    assert Tolerances.for_precision("fp16").min_cosine == 0.9995
    assert Tolerances.for_precision("int8").min_cosine == 0.99
    custom = Tolerances.for_precision("fp16", atol=1e-2, min_cosine=None, max_dist_change=0.05)
    assert custom == Tolerances(atol=1e-2, min_cosine=0.9995, max_dist_change=0.05)  # None = keep the default
    with pytest.raises(FacecvtError, match="unknown precision 'fp8'"):
        Tolerances.for_precision("fp8")
    with pytest.raises(ValueError, match="rtol"):
        Tolerances.for_precision("fp32", rtol=1.0)


def test_failed_names_the_measures(embeddings):
    ref, _ = embeddings
    scaled = ref.copy()
    scaled[:, :4] *= 1.03
    scaled = _unit(scaled)
    strict = _feed(EmbeddingComparator(Tolerances.for_precision("fp32")), ref, scaled, [100]).result()
    assert not strict["pass"] and strict["failed"] == ["max_abs", "min_cosine"]
    assert 0.999 < strict["min_cosine"] < 0.99999 and strict["max_abs"] > 1e-3
    loose = _feed(EmbeddingComparator(Tolerances.for_precision("int8")), ref, scaled, [60, 40]).result()
    assert loose["pass"] and loose["failed"] == [] and loose["tolerances"]["min_cosine"] == 0.99
    gated = Tolerances.for_precision("int8", max_dist_change=1e-4)
    assert _feed(EmbeddingComparator(gated), ref, scaled, [100]).result()["failed"] == ["max_dist_change"]
    same = _feed(EmbeddingComparator(), ref, ref.copy(), [33, 67]).result()
    assert same["pass"] and same["max_abs"] == 0 and same["min_cosine"] == pytest.approx(1.0)


def test_nonfinite_and_shape_errors(embeddings):
    ref, cand = embeddings
    broken = ref.copy()
    broken[3, 0] = np.nan
    result = _feed(EmbeddingComparator(), ref, broken, [50, 50]).result()
    assert result["nonfinite"] == 1 and result["failed"] == ["nonfinite"] and not result["pass"]
    assert np.isfinite(result["max_abs"]) and not result["dist_exact"]
    with pytest.raises(FacecvtError, match="shape"):
        EmbeddingComparator().update(ref[:4], cand[:4, :8])
    with pytest.raises(FacecvtError, match="no inputs were compared"):
        EmbeddingComparator().result()


def test_cosine_and_distance_helpers():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(cosine_similarity(a, b), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(squared_distances(a[:1], b), [[5.0, 0.0, 1.0]])


def test_distribution_keeps_per_input_cosines_and_a_bounded_histogram(embeddings):
    ref, cand = embeddings
    comparator = _feed(EmbeddingComparator(exact_values=100), ref, cand, [30, 70])
    cand_nan = cand[:3].copy()
    cand_nan[1, 0] = np.nan
    comparator.update(ref[:3], cand_nan)
    distribution = comparator.distribution()
    cosines = np.array(distribution["cosines"])
    assert cosines.shape == (103,) and np.isnan(cosines[101])
    np.testing.assert_allclose(cosines[:100], cosine_similarity(ref, cand), rtol=0, atol=1e-12)
    hist = distribution["abs_hist"]
    assert len(hist["edges"]) == len(hist["counts"]) + 1 and len(hist["counts"]) <= 150
    assert sum(hist["counts"]) + hist["below"] == comparator.values
    delta = np.abs(cand.astype(np.float64) - ref)
    assert hist["edges"][0] <= delta[delta > 1e-12].min() and hist["edges"][-1] >= delta.max()
