"""MIL ops that move, cut, join or re-type tensors without arithmetic."""

from __future__ import annotations

import numpy as np

from facecvt.validate.mil.dtypes import STORAGE
from facecvt.validate.mil.ops.registry import ints, mil_op


@mil_op("identity")
def identity(x):
    """x unchanged."""
    return x


@mil_op("cast")
def cast(x, dtype):
    """x converted to the MIL dtype named by `dtype` ('fp16', 'fp32', 'int32', 'bool'...)."""
    return np.asarray(x).astype(STORAGE[str(dtype)])


@mil_op("concat")
def concat(values, axis, interleave=False):
    """Join tensors along `axis`; interleave takes one slice of each in turn."""
    axis = int(axis)
    if not interleave:
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@mil_op("stack")
def stack(values, axis):
    """Stack tensors along a new axis."""
    return np.stack(values, axis=int(axis))


@mil_op("reshape")
def reshape(x, shape):
    """Reshape; -1 is inferred and 0 copies x's dimension when len(shape) == rank(x)."""
    shape = list(ints(shape))
    if len(shape) == x.ndim:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@mil_op("flatten2d")
def flatten2d(x, axis=1):
    """(prod(shape[:axis]), prod(shape[axis:]))."""
    axis = int(axis) % x.ndim if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@mil_op("transpose")
def transpose(x, perm):
    """Permute axes."""
    return np.transpose(x, ints(perm))


@mil_op("squeeze")
def squeeze(x, axes=None):
    """Drop size-1 axes (all of them when axes is None)."""
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=ints(axes))


@mil_op("expand_dims")
def expand_dims(x, axes):
    """Insert size-1 axes at the given positions of the output."""
    return np.expand_dims(x, axis=ints(axes))


@mil_op("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    """Pad the last len(pad)/2 axes: constant, reflect or replicate (edge)."""
    pad = ints(pad)
    widths = [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=constant_val)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[str(mode)])


@mil_op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """x[begin:end:stride] per axis, with TF-style begin/end/squeeze masks."""
    rank = x.ndim
    begin, end = ints(begin), ints(end)
    stride = ints(stride) or (1,) * rank
    begin_mask = np.zeros(rank, bool) if begin_mask is None else np.asarray(begin_mask, bool).reshape(-1)
    end_mask = np.zeros(rank, bool) if end_mask is None else np.asarray(end_mask, bool).reshape(-1)
    squeeze_mask = np.zeros(rank, bool) if squeeze_mask is None else np.asarray(squeeze_mask, bool).reshape(-1)
    index = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(begin[i])
            continue
        start = None if begin_mask[i] else begin[i]
        stop = None if end_mask[i] else end[i]
        index.append(slice(start, stop, stride[i]))
    return x[tuple(index)]


@mil_op("slice_by_size")
def slice_by_size(x, begin, size):
    """x[begin : begin + size] per axis; size -1 runs to the end."""
    return x[tuple(slice(b, None if s == -1 else b + s) for b, s in zip(ints(begin), ints(size)))]


@mil_op("split")
def split(x, axis, num_splits=None, split_sizes=None):
    """Cut along `axis` into equal parts or into `split_sizes`."""
    axis = int(axis)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(ints(split_sizes))[:-1], axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


@mil_op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """tf.gather: take `indices` (negative allowed) along `axis`."""
    axis = int(axis)
    if int(batch_dims) != 0:
        raise ValueError("gather with batch_dims != 0 is not implemented")
    return np.take(x, np.asarray(indices).astype(np.int64), axis=axis)


@mil_op("gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    """np.take_along_axis."""
    return np.take_along_axis(x, np.asarray(indices).astype(np.int64), axis=int(axis))


@mil_op("tile")
def tile(x, reps):
    """Repeat x reps[i] times along axis i."""
    return np.tile(x, ints(reps))


@mil_op("shape")
def shape(x):
    """The shape of x as int32."""
    return np.asarray(x.shape, dtype=np.int32)


@mil_op("fill")
def fill(shape, value=0.0):
    """A tensor of `shape` filled with `value`."""
    return np.full(ints(shape), value)


@mil_op("select")
def select(cond, a, b):
    """a where cond else b (broadcasting)."""
    return np.where(cond, a, b)


@mil_op("range_1d")
def range_1d(end, start, step):
    """np.arange(start, end, step)."""
    return np.arange(start, end, step)
