"""Short 8-bit sketches of embeddings, which the face index's graph is built on.

A 512-D embedding becomes, for the graph, a 128-D int8 vector: a fixed random orthogonal
projection (Johnson-Lindenstrauss: every squared distance kept within ~sqrt(2/128) = 12 % whatever
the data's shape), renormalised to unit length and scaled so that four standard deviations of a
component fill int8's range. A graph of 128-byte sketches is read from memory four times faster than
one of 512-byte 8-bit embeddings; the index re-ranks the graph's candidates by the exact float
distance, so the sketch only has to put the nearest face among them. Embeddings of `dims` or fewer
are rotated, not shortened (the rotation spreads a vector over every component, so that none is
clipped to int8's range).

    embedding (dim float32) --@ projection (dim x min(dim, dims))--> unit length --* scale, round--> int8
"""

from __future__ import annotations

import numpy as np

SKETCH_DIMS = 128
SIGMAS_IN_RANGE = 4.0  # a unit vector's component has std 1/sqrt(dims): 4 of them map to 127


def new_projection(dim: int, dims: int = SKETCH_DIMS, seed: int = 0) -> np.ndarray:
    """A `dim` x min(`dim`, `dims`) projection with orthonormal columns, random. The index stores it
    with its table, so a graph is always searched with the projection it was built with (not one
    drawn again by another NumPy or LAPACK)."""
    gaussian = np.random.default_rng(seed).standard_normal((dim, dim))
    return np.linalg.qr(gaussian)[0][:, :min(dim, dims)].astype(np.float32)


def sketch(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The int8 sketches of `vectors` (n x dim float) under `projection` (see the module docstring)."""
    # few NumPy calls: a search sketches one vector, with NumPy's code and data cold in the caches
    short = np.asarray(vectors, np.float32).reshape(len(vectors), -1) @ projection
    lengths = np.sqrt(np.einsum("ij,ij->i", short, short))
    scale = (127 * np.sqrt(short.shape[1]) / SIGMAS_IN_RANGE) / np.maximum(lengths, 1e-30)
    codes = np.rint(short * scale[:, None])
    return np.clip(codes, -127, 127, out=codes).astype(np.int8)
