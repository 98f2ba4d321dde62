"""Streaming comparison of candidate embeddings against reference embeddings (after Polygraphy's comparator).

`EmbeddingComparator.update(ref, cand)` is fed batch by batch; memory stays bounded whatever the
number of inputs:
- max |Δ|, mean |Δ| and min cosine similarity are exact running values;
- p99 |Δ| is exact (NumPy's linear percentile) while at most `exact_values` element differences
  have been seen; beyond that it comes from a log-spaced histogram of 200 bins per decade over
  [1e-12, 1e3), i.e. within about 0.6 % (relative) of the exact value;
- the max change of pairwise squared-L2 distance covers every pair of inputs while at most
  `window_rows` inputs have been seen (`dist_exact` True); beyond that it covers the pairs within a
  sliding window of the last `window_rows` inputs (`dist_pairs` says how many pairs were compared).
Memory: the window (2 x window_rows x D float64: 16 MB at 2048 x 512) plus the exact-percentile
buffer (8 MB at 2^20 values); time about 25 ms per batch of 32 once the window is full.
For the HTML report `distribution()` gives the per-input cosines (one float per input) and the
|Δ| histogram (the quantile's fixed log bins, coarsened to 10 per decade).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.core.targets import PRECISIONS


@dataclass(frozen=True)
class Tolerances:
    """Limits a candidate must meet; None disables a check (the measure is still reported).

    Defaults per precision (see `for_precision`):
    - fp32: atol 1e-4, min_cosine 0.99999. fp32 exports differ from TensorFlow only by summation
      order; on the released VGGFace2 model and the 61 test faces max |Δ| was 1.2e-7 (onnxruntime)
      and 2.7e-7 (LiteRT), and reassociation-heavy runtimes reach ~1e-6..1e-5. 1e-4 leaves a 10x
      margin over the latter while staying far below a typical element of a 512-D unit vector
      (~0.044); a cosine of 0.99999 allows an embedding error of norm 0.0045.
    - fp16: no per-element limit (half-precision weights: measured max |Δ| 2.5e-4), min_cosine 0.9995
      (measured 0.9999987).
    - int8: min_cosine 0.99 (full-integer quantisation calibrated on 20 faces: measured 0.9936).
    `max_dist_change` (pairwise squared-L2) is reported but not checked by default: with `--pairs`
    the effect on decisions is measured directly by the decision agreement.
    """

    atol: float | None = 1e-4
    min_cosine: float | None = 0.99999
    max_dist_change: float | None = None

    @classmethod
    def for_precision(cls, precision: str = "fp32", **overrides) -> Tolerances:
        """The defaults of `precision`, with every override that is not None applied."""
        if precision not in PRECISION_DEFAULTS:
            raise FacecvtError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown tolerance(s) {sorted(unknown)}; known: {sorted(names)}")
        base = asdict(PRECISION_DEFAULTS[precision])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def as_dict(self) -> dict:
        """The limits as a JSON-ready dict."""
        return asdict(self)


PRECISION_DEFAULTS = {
    "fp32": Tolerances(atol=1e-4, min_cosine=0.99999),
    "fp16": Tolerances(atol=None, min_cosine=0.9995),
    "int8": Tolerances(atol=None, min_cosine=0.99),
}


class AbsDiffQuantile:
    """Streaming quantile of non-negative values: exact up to `exact_values`, then a log histogram."""

    LOG_MIN, LOG_MAX, BINS_PER_DECADE = -12, 3, 200

    def __init__(self, exact_values: int = 1 << 20):
        self.exact_values = exact_values
        self.chunks: list[np.ndarray] | None = []
        self.n_bins = (self.LOG_MAX - self.LOG_MIN) * self.BINS_PER_DECADE
        self.counts = np.zeros(self.n_bins + 2, dtype=np.int64)  # [underflow, bins..., overflow]
        self.count = 0
        self.max = 0.0

    def add(self, values: np.ndarray) -> None:
        """Account for a batch of values (any shape)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        self.count += values.size
        self.max = max(self.max, float(values.max()))
        self.counts += np.bincount(self._bin(values), minlength=self.counts.size)
        if self.chunks is not None:
            self.chunks.append(values.copy())
            if self.count > self.exact_values:
                self.chunks = None  # too many to keep: the histogram takes over

    @property
    def exact(self) -> bool:
        """True while every value is kept, so `quantile` is exact."""
        return self.chunks is not None

    def _bin(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            position = (np.log10(values) - self.LOG_MIN) * self.BINS_PER_DECADE
        position = np.where(values > 0, position, -1.0)
        return (np.clip(np.floor(position), -1, self.n_bins) + 1).astype(np.int64)

    def histogram(self, bins_per_decade: int = 10) -> dict:
        """The values' log histogram: `edges` (len(counts)+1) over the occupied range, `counts`, and
        `below` (values under 1e-12, zeros included, which a log axis cannot show)."""
        group = max(1, self.BINS_PER_DECADE // bins_per_decade)
        inner = self.counts[1:-1].reshape(-1, group).sum(axis=1)
        inner[-1] += self.counts[-1]  # beyond 1e3: counted in the last bin
        occupied = np.flatnonzero(inner)
        if occupied.size == 0:
            return {"edges": [], "counts": [], "below": int(self.counts[0])}
        lo, hi = int(occupied[0]), int(occupied[-1]) + 1
        step = group / self.BINS_PER_DECADE
        edges = 10.0 ** (self.LOG_MIN + step * np.arange(lo, hi + 1))
        return {"edges": edges.tolist(), "counts": inner[lo:hi].tolist(), "below": int(self.counts[0])}

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) of the values seen."""
        if self.count == 0:
            return float("nan")
        if self.exact:
            return float(np.percentile(np.concatenate(self.chunks), 100.0 * q))
        rank = math.floor(q * (self.count - 1))
        b = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if b == 0:
            return 0.0
        if b > self.n_bins:
            return self.max
        centre = 10.0 ** (self.LOG_MIN + (b - 0.5) / self.BINS_PER_DECADE)
        return min(centre, self.max)


class EmbeddingComparator:
    """Accumulates reference vs candidate embeddings batch by batch; `result()` judges them."""

    def __init__(self, tolerances: Tolerances | None = None, *, window_rows: int = 2048,
                 exact_values: int = 1 << 20):
        self.tolerances = tolerances or Tolerances()
        self.window_rows = window_rows
        self.count = 0
        self.values = 0
        self.nonfinite = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.min_cosine = float("inf")
        self.max_dist_change = 0.0
        self.dist_pairs = 0
        self.quantile = AbsDiffQuantile(exact_values)
        self.window_ref: np.ndarray | None = None  # the last `window_rows` inputs' embeddings, float64
        self.window_cand: np.ndarray | None = None
        self.cosines: list[np.ndarray] = []  # per input, in input order (NaN for a non-finite row)

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Add one batch: `ref` and `cand` are (N, D) embeddings of the same N inputs."""
        ref = np.asarray(ref, dtype=np.float64)
        cand = np.asarray(cand, dtype=np.float64)
        if ref.shape != cand.shape or ref.ndim != 2:
            raise FacecvtError(f"candidate embeddings have shape {cand.shape} but the reference's have "
                               f"{ref.shape}; compare models with the same embedding size")
        if ref.shape[0] == 0:
            return
        finite = np.isfinite(ref).all(axis=1) & np.isfinite(cand).all(axis=1)
        self.nonfinite += int((~finite).sum())
        self.count += ref.shape[0]
        ref, cand = ref[finite], cand[finite]
        delta = np.abs(cand - ref)
        cosines = np.full(len(finite), np.nan)
        if delta.size:
            self.values += delta.size
            self.max_abs = max(self.max_abs, float(delta.max()))
            self.sum_abs += float(delta.sum())
            self.quantile.add(delta)
            cosines[finite] = cosine_similarity(ref, cand)
            self.min_cosine = min(self.min_cosine, float(cosines[finite].min()))
            self._update_distances(ref, cand)
        self.cosines.append(cosines)

    def _update_distances(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if self.window_ref is not None and self.window_ref.shape[1] != ref.shape[1]:
            # another input size (verify --sizes): distances compare inputs of one size only
            self.window_ref = self.window_cand = None
        change = np.abs(squared_distances(ref, ref) - squared_distances(cand, cand))
        n = ref.shape[0]
        self.dist_pairs += n * (n - 1) // 2
        self.max_dist_change = max(self.max_dist_change, float(np.triu(change, k=1).max(initial=0.0)))
        if self.window_ref is not None:
            change = np.abs(squared_distances(self.window_ref, ref) - squared_distances(self.window_cand, cand))
            self.dist_pairs += change.size
            self.max_dist_change = max(self.max_dist_change, float(change.max()))
            ref = np.concatenate([self.window_ref, ref])
            cand = np.concatenate([self.window_cand, cand])
        # one array per side, so each batch meets the whole window in a single matrix product
        self.window_ref, self.window_cand = ref[-self.window_rows:], cand[-self.window_rows:]

    def result(self) -> dict:
        """The measures, `tolerances`, `pass` and `failed` (names of the measures out of tolerance)."""
        if self.count == 0:
            raise FacecvtError("no inputs were compared; give at least one image or --random N")
        valid = self.values > 0
        measures = {
            "count": self.count,
            "max_abs": self.max_abs if valid else None,
            "mean_abs": self.sum_abs / self.values if valid else None,
            "p99_abs": self.quantile.quantile(0.99) if valid else None,
            "p99_exact": self.quantile.exact,
            "min_cosine": self.min_cosine if valid else None,
            "max_dist_change": self.max_dist_change if valid else None,
            "dist_pairs": self.dist_pairs,
            "dist_exact": self.dist_pairs == (self.count * (self.count - 1)) // 2,
            "nonfinite": self.nonfinite,
        }
        failed = failed_measures(measures, self.tolerances)
        return {**measures, "tolerances": self.tolerances.as_dict(), "pass": not failed, "failed": failed}

    def distribution(self, bins_per_decade: int = 10) -> dict:
        """`cosines` per input and the |Δ| histogram `abs_hist` ({edges, counts, zeros}) for plots."""
        return {"cosines": np.concatenate(self.cosines).tolist() if self.cosines else [],
                "abs_hist": self.quantile.histogram(bins_per_decade)}


def failed_measures(measures: dict, tolerances: Tolerances) -> list[str]:
    """Names of the measures outside `tolerances` ("nonfinite" when any output was NaN/inf)."""
    failed = []
    if measures["nonfinite"]:
        failed.append("nonfinite")
    if tolerances.atol is not None and measures["max_abs"] is not None and measures["max_abs"] > tolerances.atol:
        failed.append("max_abs")
    if (tolerances.min_cosine is not None and measures["min_cosine"] is not None
            and measures["min_cosine"] < tolerances.min_cosine):
        failed.append("min_cosine")
    if (tolerances.max_dist_change is not None and measures["max_dist_change"] is not None
            and measures["max_dist_change"] > tolerances.max_dist_change):
        failed.append("max_dist_change")
    return failed


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays; 1 for two zero rows, 0 for one zero row."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cos)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) squared L2 distances between the rows of `a` and `b`, in float64.

    Uses |a|^2 + |b|^2 - 2ab; in float64 its rounding (~1e-15 for unit vectors) is far below the
    differences measured here.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


# ---------------------------------------------------------------------------------------------
# several outputs: each compared on its own, judged by what it means

@dataclass(frozen=True)
class OutputTolerances:
    """Limits for one output of a multi-output model; None disables a check.

    - `rel_atol`: max |Δ| / max |reference| (fp32: 1e-4; an un-normalised head reaches |x| ~ 7, so
      an absolute 1e-4 would be tighter than fp32 rounding of such values);
    - `min_cosine`: for vector outputs (embeddings, generic tensors), not for a 4-number box;
    - `prob_atol`: max |Δp| of a probability with one value per input (R-/O-Net's face probability);
    - `prob_map_p99`, `prob_map_max`: a probability map (P-Net: one window per cell, thousands per
      input) is judged on the p99 of |Δp| over all cells with the one-window limit, and on its worst
      cell with a looser one: the max over 10^5 windows is a tail no int8 model can keep below the
      one-window limit (see int8 below);
    - `max_pixels`: max error of a box offset or landmark in pixels at the net's input size (the
      offsets are fractions of the box: the input crop of R-/O-Net, the 12x12 cell window of P-Net).

    fp16: probability 0.01 (measured 1.4e-3 on O-Net, 8.2e-3 on P-Net's maps), 0.5 px (measured 0.26).
    int8, calibrated on half the 61 shared faces and scored on the other half, four ways of halving
    (ONNX with float heads, TFLite full-integer; README, int8 of several outputs): probability 0.2
    (R-/O-Net measured 0.04-0.18, the worst on faces whose probability is near 0.5, where a logit
    error counts most); P-Net's map p99 0.1 (measured 0.065-0.071), worst cell 0.5 (measured
    0.29-0.37: int8 weights alone give 0.14, and ±1 grey level of input noise moves the fp32 P-Net by
    0.13); box and landmarks 2 px (measured 0.5-1.44 px).
    """

    rel_atol: float | None = None
    min_cosine: float | None = None
    prob_atol: float | None = None
    prob_map_p99: float | None = None
    prob_map_max: float | None = None
    max_pixels: float | None = None

    @classmethod
    def for_output(cls, precision: str, kind: str) -> "OutputTolerances":
        if precision not in PRECISIONS:
            raise FacecvtError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        vector = kind in ("embedding", "tensor")
        prob, located = kind == "prob", kind in ("box", "landmarks")
        if precision == "fp32":
            return cls(rel_atol=1e-4, min_cosine=0.99999 if vector else None)
        if precision == "fp16":
            return cls(min_cosine=0.9995 if vector else None, prob_atol=0.01 if prob else None,
                       prob_map_p99=0.01 if prob else None, prob_map_max=0.01 if prob else None,
                       max_pixels=0.5 if located else None)
        return cls(min_cosine=0.99 if vector else None, prob_atol=0.2 if prob else None,
                   prob_map_p99=0.1 if prob else None, prob_map_max=0.5 if prob else None,
                   max_pixels=2.0 if located else None)

    def judged(self, is_map: bool) -> "OutputTolerances":
        """The limits that apply to an output of one value per input (`is_map` False) or to a map."""
        if is_map:
            return replace(self, prob_atol=None)
        return replace(self, prob_map_p99=None, prob_map_max=None)

    def as_dict(self) -> dict:
        return asdict(self)


class OutputComparator:
    """One output of a multi-output model, compared batch by batch (any shape (N, ...))."""

    def __init__(self, name: str, kind: str, tolerances: OutputTolerances, candidate_name: str | None = None):
        self.name, self.kind, self.tolerances = name, kind, tolerances
        self.candidate_name = candidate_name or name
        # a small window: an output map of a free-size net can hold thousands of values per input
        self.values = EmbeddingComparator(Tolerances(atol=None, min_cosine=None), window_rows=64)
        self.ref_max = 0.0
        self.max_offset = 0.0  # max |Δ| of a box/landmark output, in fractions of its window
        self.shapes: set = set()
        self.sizes: dict = {}  # input (H, W) -> output shape (N dropped): the window of a map output

    def update(self, ref: np.ndarray, cand: np.ndarray, input_hw: tuple | None = None) -> None:
        if ref.shape != cand.shape:
            raise FacecvtError(f"output {self.name}: the candidate returns shape {cand.shape} but the reference "
                               f"{ref.shape}; compare exports of the same model")
        self.shapes.add(tuple(ref.shape[1:]))
        flat_ref, flat_cand = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
        self.values.update(flat_ref, flat_cand)
        finite = np.isfinite(flat_ref)
        if finite.any():
            self.ref_max = max(self.ref_max, float(np.abs(flat_ref[finite]).max()))
        if self.kind in ("box", "landmarks") and flat_ref.size:
            delta = np.abs(flat_cand.astype(np.float64) - flat_ref)
            self.max_offset = max(self.max_offset, float(np.nanmax(delta)))
            if input_hw is not None:
                self.sizes[tuple(input_hw)] = tuple(ref.shape[1:])

    def window(self) -> float | None:
        """Pixels one unit of a box/landmark offset spans: the input crop for a vector output (R-/O-Net),
        the window of one cell for a map output (P-Net: the input size that gives a 1x1 map, from
        the sizes seen: a 1x1 map at size H, or two sizes giving the stride); None if not known."""
        if not self.sizes:
            return None
        if all(len(shape) == 1 for shape in self.sizes.values()):
            return float(max(max(hw) for hw in self.sizes))
        for (h, _), shape in self.sizes.items():
            if shape[0] == 1:
                return float(h)
        seen = sorted((h, shape[0]) for (h, _), shape in self.sizes.items())
        for (h1, o1), (h2, o2) in zip(seen, seen[1:]):
            if o2 != o1:
                stride = (h2 - h1) / (o2 - o1)
                return float(h1 - (o1 - 1) * stride)
        return None

    def result(self) -> dict:
        measures = self.values.result()
        max_abs = measures["max_abs"]
        rel = None if max_abs is None else max_abs / self.ref_max if self.ref_max > 0 else float(max_abs > 0) * math.inf
        row = {"name": self.name, "candidate_name": self.candidate_name, "kind": self.kind,
               "shape": [None if len({s[i] for s in self.shapes}) > 1 else d
                         for i, d in enumerate(next(iter(self.shapes)))] if self.shapes else None,
               "max_abs": max_abs, "mean_abs": measures["mean_abs"], "p99_abs": measures["p99_abs"],
               "ref_max_abs": self.ref_max, "rel_max_abs": rel, "min_cosine": measures["min_cosine"],
               "max_pixels": (self.max_offset * self.window() if self.kind in ("box", "landmarks") and self.window()
                              else None),
               "nonfinite": measures["nonfinite"]}
        row["shape"] = [None, *row["shape"]] if row["shape"] is not None else None
        failed = ["nonfinite"] if row["nonfinite"] else []
        tol = self.tolerances.judged(self.is_map())
        checks = (("rel_max_abs", tol.rel_atol, lambda v, t: v <= t),
                  ("min_cosine", tol.min_cosine, lambda v, t: v >= t),
                  ("max_abs", tol.prob_atol, lambda v, t: v <= t),
                  ("p99_abs", tol.prob_map_p99, lambda v, t: v <= t),
                  ("max_abs", tol.prob_map_max, lambda v, t: v <= t),
                  ("max_pixels", tol.max_pixels, lambda v, t: v <= t))
        for measure, limit, within in checks:
            if limit is not None and row[measure] is not None and not within(row[measure], limit):
                failed.append(measure)
        return {**row, "tolerances": tol.as_dict(), "pass": not failed, "failed": list(dict.fromkeys(failed))}

    def is_map(self) -> bool:
        """True for a map output (N, H', W', C): several windows per input (P-Net), not one value each."""
        return any(len(shape) > 1 for shape in self.shapes)
