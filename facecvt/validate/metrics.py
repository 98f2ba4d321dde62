"""Face-verification measures from pair distances (squared L2) and same/different labels.

A pair is predicted "same" when its distance is below the threshold (d < threshold).
Plain NumPy; every function takes `dist` (P,) float and `same` (P,) bool.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(dist, same) -> tuple[np.ndarray, np.ndarray]:
    dist = np.asarray(dist, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if dist.shape != same.shape:
        raise ValueError(f"{dist.size} distances but {same.size} labels")
    if dist.size == 0:
        raise ValueError("no pairs")
    return dist, same


def best_threshold(dist, same) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `d < threshold` over the given pairs.

    Exact: every split between consecutive distinct distances is tried; the threshold is the
    midpoint of the best split (the first one among equally good splits).
    """
    dist, same = _as_arrays(dist, same)
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], same[order]
    # a split after position k (k pairs accepted) is possible only between distinct distances
    cut = np.concatenate([[0], np.flatnonzero(np.diff(d) > 0) + 1, [d.size]])
    same_below = np.concatenate([[0], np.cumsum(s)])[cut]
    diff_above = (~s).sum() - (cut - same_below)
    correct = same_below + diff_above
    best = int(np.argmax(correct))
    k = cut[best]
    if k == 0:
        threshold = d[0] - 1.0
    elif k == d.size:
        threshold = d[-1] + 1.0
    else:
        threshold = (d[k - 1] + d[k]) / 2.0
    return float(threshold), float(correct[best] / d.size)


def accuracy_at(dist, same, threshold: float) -> float:
    """Fraction of pairs whose prediction `d < threshold` matches the label."""
    dist, same = _as_arrays(dist, same)
    return float(np.mean((dist < threshold) == same))


def kfold_accuracy(dist, same, folds) -> tuple[float, float, list[float]]:
    """facenet-style k-fold accuracy: (mean, std, per-fold thresholds).

    For each fold, the threshold is chosen on the pairs of the other folds and the accuracy
    measured on the held-out fold.
    """
    dist, same = _as_arrays(dist, same)
    accuracies, thresholds = [], []
    for test in folds:
        test = np.asarray(test, dtype=np.int64)
        train = np.ones(dist.size, dtype=bool)
        train[test] = False
        threshold, _ = best_threshold(dist[train], same[train])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(dist[test], same[test], threshold))
    return float(np.mean(accuracies)), float(np.std(accuracies)), thresholds


def roc_auc(dist, same) -> float:
    """Area under the ROC: P(a same pair is closer than a different pair), ties counted 1/2."""
    dist, same = _as_arrays(dist, same)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same == 0 or n_diff == 0:
        return float("nan")
    # Mann-Whitney U on the scores -dist, with average ranks for ties
    values, inverse, counts = np.unique(-dist, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    average_rank = first_rank + (counts - 1) / 2.0
    rank_sum = average_rank[inverse][same].sum()
    return float((rank_sum - n_same * (n_same + 1) / 2.0) / (n_same * n_diff))


def roc_curve(dist, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds): accepting `d <= t` for each distinct distance t, after a (0, 0) start.

    FAR = accepted different pairs / different pairs, TAR = accepted same pairs / same pairs.
    """
    dist, same = _as_arrays(dist, same)
    thresholds = np.unique(dist)
    same_sorted = np.sort(dist[same])
    diff_sorted = np.sort(dist[~same])
    tar = np.searchsorted(same_sorted, thresholds, side="right") / max(same_sorted.size, 1)
    far = np.searchsorted(diff_sorted, thresholds, side="right") / max(diff_sorted.size, 1)
    start = thresholds[0] - 1.0
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar]), np.concatenate([[start], thresholds])


def equal_error_rate(dist, same) -> tuple[float, float]:
    """(eer, threshold) where FAR = FRR, linearly interpolated between neighbouring ROC points."""
    far, tar, thresholds = roc_curve(dist, same)
    frr = 1.0 - tar
    gap = far - frr  # rises from -1 (accept nothing) to +1 (accept everything)
    k = int(np.argmax(gap >= 0))
    if gap[k] == 0 or k == 0:
        return float(far[k]), float(thresholds[k])
    t = -gap[k - 1] / (gap[k] - gap[k - 1])
    eer = far[k - 1] + t * (far[k] - far[k - 1])
    threshold = thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1])
    return float(eer), float(threshold)


def decision_agreement(dist_ref, dist_cand, threshold: float) -> float:
    """Fraction of pairs where the candidate's decision `d < threshold` equals the reference's."""
    dist_ref = np.asarray(dist_ref, dtype=np.float64).ravel()
    dist_cand = np.asarray(dist_cand, dtype=np.float64).ravel()
    if dist_ref.shape != dist_cand.shape:
        raise ValueError(f"{dist_ref.size} reference distances but {dist_cand.size} candidate distances")
    return float(np.mean((dist_ref < threshold) == (dist_cand < threshold)))


def pair_distances(embeddings: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Squared L2 distance (float64) of each pair (embeddings[left[i]], embeddings[right[i]])."""
    emb = np.asarray(embeddings, dtype=np.float64)
    delta = emb[left] - emb[right]
    return np.einsum("ij,ij->i", delta, delta)


def verification_metrics(dist, same, folds=None) -> dict:
    """accuracy (k-fold when `folds`, else at the best threshold on all pairs), auc, eer, threshold.

    `threshold` is always the accuracy-maximising threshold on all pairs (the one decisions
    are compared at); `accuracy_std` is given with folds.
    """
    dist, same = _as_arrays(dist, same)
    threshold, accuracy = best_threshold(dist, same)
    result = {"accuracy": accuracy}
    if folds is not None:
        result["accuracy"], result["accuracy_std"], _ = kfold_accuracy(dist, same, folds)
    eer, eer_threshold = equal_error_rate(dist, same)
    result.update(auc=roc_auc(dist, same), eer=eer, eer_threshold=eer_threshold, threshold=threshold)
    return result
