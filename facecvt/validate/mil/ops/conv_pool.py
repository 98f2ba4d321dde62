"""conv and the pooling ops, for any number of spatial dimensions (NC + spatial layout).

Every op here walks the kernel offsets and takes one strided view of the padded input per
offset, so the heavy lifting is a handful of vectorised copies plus one BLAS matmul (conv)
or a running max/sum (pooling, depthwise conv).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from facecvt.validate.mil.ops.registry import ints, mil_op


def spatial_padding(pad_type: str, pad, in_sizes, kernel, strides, dilations) -> list:
    """[(before, after)] per spatial dimension for MIL's pad_type valid / same / same_lower / custom."""
    if pad_type == "valid":
        return [(0, 0)] * len(in_sizes)
    if pad_type == "custom":
        pad = ints(pad)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(in_sizes))]
    if pad_type not in ("same", "same_lower"):
        raise ValueError(f"unknown pad_type {pad_type!r}")
    pads = []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        # TF/Core ML 'same' puts the odd pixel after; 'same_lower' before.
        pads.append((small, large) if pad_type == "same" else (large, small))
    return pads


def _window_views(xp: np.ndarray, kernel, strides, dilations, out_sizes):
    """(kernel offset, strided view of xp) for every kernel offset: the view at offset o holds,
    for each output position p, the input element that kernel tap o multiplies at p."""
    for offsets in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                      for o, d, s, n in zip(offsets, dilations, strides, out_sizes))
        yield offsets, xp[(slice(None), slice(None)) + index]


def _pad_spatial(x: np.ndarray, pads, value=0.0) -> np.ndarray:
    if not any(b or a for b, a in pads):
        return x
    return np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value)


def _conv_gemm(xp, weight, strides, dilations, out_sizes) -> np.ndarray:
    """Dense convolution as one matmul over the whole batch: (Cout, Cin*K) @ (Cin*K, N*P).

    One big product instead of one per image keeps BLAS efficient on small feature maps.
    The result is an (N, Cout, *S) view of a (Cout, N, *S) array.
    """
    n, c_in = xp.shape[:2]
    c_out, kernel = weight.shape[0], weight.shape[2:]
    cols = np.empty((c_in, *kernel, n, *out_sizes), dtype=np.float32)
    for offsets, view in _window_views(xp, kernel, strides, dilations, out_sizes):
        cols[(slice(None), *offsets)] = view.swapaxes(0, 1)
    y = weight.reshape(c_out, -1) @ cols.reshape(c_in * math.prod(kernel), n * math.prod(out_sizes))
    return y.reshape(c_out, n, *out_sizes).swapaxes(0, 1)


def _conv_depthwise(xp, weight, strides, dilations, out_sizes) -> np.ndarray:
    """One input channel per group: a running sum of shifted views times per-channel taps."""
    multiplier = weight.shape[0] // xp.shape[1]
    if multiplier > 1:
        xp = np.repeat(xp, multiplier, axis=1)
    y = np.zeros((xp.shape[0], weight.shape[0], *out_sizes), dtype=np.float32)
    spatial_ones = (1,) * len(out_sizes)
    for offsets, view in _window_views(xp, weight.shape[2:], strides, dilations, out_sizes):
        y += view * weight[(slice(None), 0, *offsets)].reshape(1, -1, *spatial_ones)
    return y


@mil_op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """MIL conv: x (N, Cin, *S), weight (Cout, Cin/groups, *K), optional bias (Cout,)."""
    spatial = x.ndim - 2
    kernel = weight.shape[2:]
    strides = ints(strides) or (1,) * spatial
    dilations = ints(dilations) or (1,) * spatial
    groups = int(groups)
    pads = spatial_padding(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    xp = _pad_spatial(x, pads)
    out_sizes = tuple((xp.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
                      for i in range(spatial))
    if groups == 1:
        y = _conv_gemm(xp, weight, strides, dilations, out_sizes)
    elif weight.shape[1] == 1 and groups == x.shape[1]:
        y = _conv_depthwise(xp, weight, strides, dilations, out_sizes)
    else:
        c_in, c_out = x.shape[1] // groups, weight.shape[0] // groups
        y = np.concatenate([
            _conv_gemm(xp[:, g * c_in:(g + 1) * c_in], weight[g * c_out:(g + 1) * c_out],
                       strides, dilations, out_sizes)
            for g in range(groups)], axis=1)
    if bias is not None:
        y += bias.reshape(1, -1, *(1,) * spatial)
    return y


def _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    """(kernel, strides, explicit pads, extra end padding from ceil_mode, output sizes)."""
    kernel = ints(kernel_sizes)
    spatial = len(kernel)
    strides = ints(strides) or (1,) * spatial
    pads = spatial_padding(pad_type, pad, x.shape[2:], kernel, strides, (1,) * spatial)
    out_sizes, extra = [], []
    for size, k, s, (before, after) in zip(x.shape[2:], kernel, strides, pads):
        padded = size + before + after
        if ceil_mode and pad_type in ("valid", "custom"):
            # Core ML's rule (coremltools' spatial_dimensions_out_shape): a last window that
            # would start in the end padding is dropped.
            out = (padded - k + s - 1) // s + 1
            if (out - 1) * s >= size + (before + after) / 2 and before + after > 0:
                out -= 1
        else:
            out = (padded - k) // s + 1
        out_sizes.append(out)
        extra.append(max((out - 1) * s + k - padded, 0))
    return kernel, strides, pads, extra, tuple(out_sizes)


def _padded_with_extra(x, pads, extra, value):
    return _pad_spatial(x, [(b, a + e) for (b, a), e in zip(pads, extra)], value)


@mil_op("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """MIL max_pool: padding never wins the max."""
    kernel, strides, pads, extra, out_sizes = _pool_geometry(x, kernel_sizes, strides, pad_type, pad,
                                                             bool(ceil_mode))
    xp = _padded_with_extra(x, pads, extra, -np.inf)
    y = None
    for _, view in _window_views(xp, kernel, strides, (1,) * len(kernel), out_sizes):
        y = view.copy() if y is None else np.maximum(y, view, out=y)
    return y


def _window_sums(x, kernel, strides, pads, extra, out_sizes):
    xp = _padded_with_extra(x, pads, extra, 0.0)
    y = np.zeros((*x.shape[:2], *out_sizes), dtype=np.float32)
    for _, view in _window_views(xp, kernel, strides, (1,) * len(kernel), out_sizes):
        y += view
    return y


def _window_counts(x, kernel, strides, pads, extra, out_sizes, count_padding: bool):
    """How many elements each window averages: padding counts only when asked; the extra
    end padding that ceil_mode adds never counts."""
    ones = np.ones((1, 1, *x.shape[2:]), dtype=np.float32)
    mask = _pad_spatial(ones, pads, 1.0 if count_padding else 0.0)
    return _window_sums(mask, kernel, strides, [(0, 0)] * len(pads), extra, out_sizes)


@mil_op("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
             exclude_padding_from_average=False):
    """MIL avg_pool, with or without padded elements in the divisor."""
    kernel, strides, pads, extra, out_sizes = _pool_geometry(x, kernel_sizes, strides, pad_type, pad,
                                                             bool(ceil_mode))
    sums = _window_sums(x, kernel, strides, pads, extra, out_sizes)
    counts = _window_counts(x, kernel, strides, pads, extra, out_sizes,
                            count_padding=not bool(exclude_padding_from_average))
    return sums / np.maximum(counts, 1.0)


@mil_op("l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """MIL l2_pool: sqrt of the sum of squares in each window."""
    kernel, strides, pads, extra, out_sizes = _pool_geometry(x, kernel_sizes, strides, pad_type, pad,
                                                             bool(ceil_mode))
    return np.sqrt(_window_sums(x * x, kernel, strides, pads, extra, out_sizes))
