"""Parameter sources for the sample graphs: seeded random, or the released FaceNet weights unfolded."""

from __future__ import annotations

import numpy as np

from facecvt.core.errors import FacecvtError

BN_EPSILON = 0.001


class RandomParams:
    """Seeded random weights with non-trivial batch-norm statistics (mean, variance, beta all vary)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, name: str, shape: tuple) -> np.ndarray:
        # one generator per variable name: values do not depend on build order
        rng = np.random.default_rng([self.seed, *name.encode()])
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("weights", "depthwise_weights"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "weights" else int(np.prod(shape[:2]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        if leaf == "moving_mean":
            return rng.normal(0.0, 0.2, shape)
        if leaf == "moving_variance":
            return rng.uniform(0.4, 2.5, shape)
        if leaf in ("beta", "biases"):
            return rng.normal(0.0, 0.1, shape)
        if leaf in ("gamma", "alpha"):
            return rng.uniform(0.5, 1.5, shape) if leaf == "gamma" else rng.uniform(0.05, 0.3, shape)
        raise KeyError(f"no random rule for parameter {name}")


class ReleasedParams:
    """The VGGFace2 weights of `graph_final.pb`, with the batch norms put back.

    graph_final.pb holds, per batch-normalised conv, `S/weights` = W * s and
    `S/Conv2D_bn_offset` = beta - mean * s with s = rsqrt(var + eps) (slim's scale=False).
    We choose s as powers of two (exact in float) and a non-zero mean per channel:
    W = W_folded / s, var = 1/s^2 - eps, beta = offset + mean * s. Inference then
    reproduces graph_final.pb up to float32 rounding of (x - mean) * s + beta.
    """

    def __init__(self, graph_def, seed: int = 0):
        from facecvt.graph_ops.graph import const_value

        self.consts = {n.name: n for n in graph_def.node if n.op == "Const"}
        self._value = lambda name: const_value(self.consts[name])
        self.seed = seed
        self._unfolded = {}

    def _unfold(self, scope: str) -> dict:
        if scope not in self._unfolded:
            w_folded = self._value(f"{scope}/weights").astype(np.float64)
            offset = self._value(f"{scope}/Conv2D_bn_offset").astype(np.float64)
            rng = np.random.default_rng([self.seed, *scope.encode()])
            channels = offset.shape[0]
            s = 2.0 ** rng.integers(-1, 2, channels)
            mean = rng.normal(0.0, 0.5, channels)
            self._unfolded[scope] = {
                "weights": w_folded / s,
                "BatchNorm/moving_mean": mean,
                "BatchNorm/moving_variance": 1.0 / s ** 2 - BN_EPSILON,
                "BatchNorm/beta": offset + mean * s,
            }
        return self._unfolded[scope]

    def __call__(self, name: str, shape: tuple) -> np.ndarray:
        for leaf in ("weights", "BatchNorm/moving_mean", "BatchNorm/moving_variance", "BatchNorm/beta"):
            if name.endswith("/" + leaf):
                scope = name[: -len(leaf) - 1]
                if f"{scope}/Conv2D_bn_offset" in self.consts:
                    return self._unfold(scope)[leaf]
        if name in self.consts:
            return self._value(name)
        raise FacecvtError(f"the released graph has no value for {name}")


def load_released_graph_def():
    from facecvt.samples.released import released_graph_path
    from facecvt.core.tf_env import graph_def_class

    graph_def = graph_def_class()()
    graph_def.ParseFromString(released_graph_path().read_bytes())
    return graph_def
