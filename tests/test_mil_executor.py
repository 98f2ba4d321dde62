"""The NumPy MIL executor, op by op, against NumPy and TensorFlow on small tensors.

Each test builds a tiny MIL program with coremltools' builder, saves it as an ML program with
no optimisation passes (so the op under test is really in the file), and runs the saved file.
"""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.core.errors import FacecvtError
from facecvt.core.tf_env import import_tf
from facecvt.validate.mil import MilExecutor
from facecvt.core.ct_env import import_coremltools

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402  (after the quiet import)

tf = import_tf()
RNG = np.random.default_rng(0)


def rand(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


@pytest.fixture
def run(tmp_path):
    """run(prog, op_type, **feeds) -> list of outputs: save `prog`, check it holds `op_type`, execute it."""
    counter = iter(range(1000))

    def run_program(prog, op_type, **feeds):
        model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                           compute_precision=ct.precision.FLOAT32,
                           minimum_deployment_target=ct.target.iOS15, skip_model_load=True)
        path = tmp_path / f"p{next(counter)}.mlpackage"
        model.save(str(path))
        executor = MilExecutor(path)
        assert op_type in executor.op_counts(), f"{op_type} not in the saved program"
        outputs = executor.run(feeds)
        return [outputs[name] for name in executor.program.outputs]

    return run_program


def spec(*shape, dtype=None):
    return mb.TensorSpec(shape=shape, dtype=dtype) if dtype else mb.TensorSpec(shape=shape)


def tf_nchw(fn, x, *args, **kwargs):
    """Run a TF NHWC op on an NCHW array and return NCHW."""
    return fn(tf.constant(x.transpose(0, 2, 3, 1)), *args, **kwargs).numpy().transpose(0, 3, 1, 2)


# ---------------------------------------------------------------- conv

@pytest.mark.parametrize("stride,pad_type,dilation", [
    (1, "valid", 1), (2, "same", 1), (1, "same", 2), (2, "valid", 1), (3, "same", 1)])
def test_conv_matches_tensorflow(run, stride, pad_type, dilation):
    x, w, b = rand(2, 3, 11, 10), rand(5, 3, 3, 3), rand(5)

    @mb.program(input_specs=[spec(2, 3, 11, 10)])
    def prog(x):
        return mb.conv(x=x, weight=w, bias=b, strides=[stride, stride], pad_type=pad_type,
                       dilations=[dilation, dilation], name="y")

    (y,) = run(prog, "conv", x=x)
    expected = tf_nchw(tf.nn.conv2d, x, w.transpose(2, 3, 1, 0), stride, pad_type.upper(),
                       dilations=dilation) + b.reshape(1, -1, 1, 1)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_conv_custom_padding(run):
    x, w = rand(1, 2, 7, 7), rand(4, 2, 3, 2)

    @mb.program(input_specs=[spec(1, 2, 7, 7)])
    def prog(x):
        return mb.conv(x=x, weight=w, strides=[2, 1], pad_type="custom", pad=[1, 2, 0, 3], name="y")

    (y,) = run(prog, "conv", x=x)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 2), (0, 3)])
    expected = tf_nchw(tf.nn.conv2d, padded, w.transpose(2, 3, 1, 0), [2, 1], "VALID")
    np.testing.assert_allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("multiplier,stride", [(1, 1), (1, 2), (2, 2)])
def test_depthwise_conv_matches_tensorflow(run, multiplier, stride):
    channels = 6
    x, w = rand(2, channels, 9, 9), rand(channels * multiplier, 1, 3, 3)

    @mb.program(input_specs=[spec(2, channels, 9, 9)])
    def prog(x):
        return mb.conv(x=x, weight=w, strides=[stride, stride], pad_type="same", groups=channels, name="y")

    (y,) = run(prog, "conv", x=x)
    # MIL output channel o = input channel o // multiplier, tap set o; TF: [h, w, in, multiplier]
    tf_filter = w[:, 0].reshape(channels, multiplier, 3, 3).transpose(2, 3, 0, 1)
    expected = tf_nchw(tf.nn.depthwise_conv2d, x, tf_filter, [1, stride, stride, 1], "SAME")
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_grouped_conv_is_per_group_convolution(run):
    x, w = rand(1, 6, 8, 8), rand(4, 3, 3, 3)

    @mb.program(input_specs=[spec(1, 6, 8, 8)])
    def prog(x):
        return mb.conv(x=x, weight=w, groups=2, pad_type="same", name="y")

    (y,) = run(prog, "conv", x=x)
    halves = [tf_nchw(tf.nn.conv2d, x[:, 3 * g:3 * g + 3], w[2 * g:2 * g + 2].transpose(2, 3, 1, 0), 1, "SAME")
              for g in range(2)]
    np.testing.assert_allclose(y, np.concatenate(halves, axis=1), atol=1e-5)


def test_conv1d(run):
    x, w = rand(2, 3, 12), rand(4, 3, 5)

    @mb.program(input_specs=[spec(2, 3, 12)])
    def prog(x):
        return mb.conv(x=x, weight=w, strides=[2], pad_type="same", name="y")

    (y,) = run(prog, "conv", x=x)
    expected = tf.nn.conv1d(x.transpose(0, 2, 1), w.transpose(2, 1, 0), 2, "SAME").numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(y, expected, atol=1e-5)


# ---------------------------------------------------------------- pooling

@pytest.mark.parametrize("kernel,stride,pad_type", [(3, 2, "same"), (2, 2, "valid"), (3, 1, "same")])
def test_max_pool_matches_tensorflow(run, kernel, stride, pad_type):
    x = rand(2, 4, 9, 8)

    @mb.program(input_specs=[spec(2, 4, 9, 8)])
    def prog(x):
        return mb.max_pool(x=x, kernel_sizes=[kernel, kernel], strides=[stride, stride], pad_type=pad_type, name="y")

    (y,) = run(prog, "max_pool", x=x)
    expected = tf_nchw(tf.nn.max_pool2d, x, kernel, stride, pad_type.upper())
    np.testing.assert_array_equal(y, expected)


def test_avg_pool_same_excluding_padding_matches_tensorflow(run):
    x = rand(2, 3, 7, 7)

    @mb.program(input_specs=[spec(2, 3, 7, 7)])
    def prog(x):
        return mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same",
                           exclude_padding_from_average=True, name="y")

    (y,) = run(prog, "avg_pool", x=x)
    np.testing.assert_allclose(y, tf_nchw(tf.nn.avg_pool2d, x, 3, 2, "SAME"), atol=1e-6)


def test_avg_pool_counting_padding_divides_by_the_kernel_area(run):
    x = rand(1, 2, 6, 6)

    @mb.program(input_specs=[spec(1, 2, 6, 6)])
    def prog(x):
        return mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                           exclude_padding_from_average=False, name="y")

    (y,) = run(prog, "avg_pool", x=x)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    np.testing.assert_allclose(y, tf_nchw(tf.nn.avg_pool2d, padded, 3, 2, "VALID"), atol=1e-6)


def test_max_pool_ceil_mode_keeps_the_partial_last_window(run):
    x = rand(1, 2, 5, 5)

    @mb.program(input_specs=[spec(1, 2, 5, 5)])
    def prog(x):
        return mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=True, name="y")

    (y,) = run(prog, "max_pool", x=x)
    padded = np.pad(x, [(0, 0), (0, 0), (0, 1), (0, 1)], constant_values=-np.inf)
    assert y.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(y, tf_nchw(tf.nn.max_pool2d, padded, 2, 2, "VALID"))


# ---------------------------------------------------------------- normalisation, linear algebra

def test_batch_norm(run):
    x = rand(2, 4, 3, 3)
    mean, variance, gamma, beta = rand(4), rand(4, low=0.1, high=2), rand(4), rand(4)

    @mb.program(input_specs=[spec(2, 4, 3, 3)])
    def prog(x):
        return mb.batch_norm(x=x, mean=mean, variance=variance, gamma=gamma, beta=beta, epsilon=1e-3, name="y")

    (y,) = run(prog, "batch_norm", x=x)
    c = (1, -1, 1, 1)
    expected = (x - mean.reshape(c)) / np.sqrt(variance.reshape(c) + 1e-3) * gamma.reshape(c) + beta.reshape(c)
    np.testing.assert_allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("transpose_x,transpose_y", [(False, False), (True, False), (False, True)])
def test_matmul(run, transpose_x, transpose_y):
    a = rand(2, 3, 4) if not transpose_x else rand(2, 4, 3)
    b = rand(4, 5) if not transpose_y else rand(5, 4)

    @mb.program(input_specs=[spec(*a.shape), spec(*b.shape)])
    def prog(a, b):
        return mb.matmul(x=a, y=b, transpose_x=transpose_x, transpose_y=transpose_y, name="y")

    (y,) = run(prog, "matmul", a=a, b=b)
    expected = np.matmul(a.swapaxes(-1, -2) if transpose_x else a, b.T if transpose_y else b)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_linear(run):
    x, w, b = rand(3, 6), rand(4, 6), rand(4)

    @mb.program(input_specs=[spec(3, 6)])
    def prog(x):
        return mb.linear(x=x, weight=w, bias=b, name="y")

    (y,) = run(prog, "linear", x=x)
    np.testing.assert_allclose(y, x @ w.T + b, atol=1e-5)


def test_l2_norm_and_softmax(run):
    x = rand(2, 3, 4, 5)

    @mb.program(input_specs=[spec(2, 3, 4, 5)])
    def prog(x):
        return mb.l2_norm(x=x, epsilon=1e-6, name="n"), mb.softmax(x=x, axis=1, name="s")

    n, s = run(prog, "l2_norm", x=x)
    flat = x.reshape(2, -1)
    np.testing.assert_allclose(n, (flat / np.sqrt((flat ** 2).sum(1, keepdims=True) + 1e-6)).reshape(x.shape),
                               atol=1e-6)
    np.testing.assert_allclose(s, tf.nn.softmax(x, axis=1).numpy(), atol=1e-6)


def test_instance_and_layer_norm(run):
    x, gamma, beta = rand(2, 3, 4, 5), rand(3), rand(3)
    ln_gamma, ln_beta = rand(4, 5), rand(4, 5)

    @mb.program(input_specs=[spec(2, 3, 4, 5)])
    def prog(x):
        return (mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=1e-5, name="i"),
                mb.layer_norm(x=x, axes=[2, 3], gamma=ln_gamma, beta=ln_beta, epsilon=1e-5, name="l"))

    instance, layer = run(prog, "instance_norm", x=x)
    c = (1, -1, 1, 1)
    spatial_mean, spatial_var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    expected = (x - spatial_mean) / np.sqrt(spatial_var + 1e-5) * gamma.reshape(c) + beta.reshape(c)
    np.testing.assert_allclose(instance, expected, atol=1e-5)
    np.testing.assert_allclose(layer, (x - spatial_mean) / np.sqrt(spatial_var + 1e-5) * ln_gamma + ln_beta,
                               atol=1e-5)


# ---------------------------------------------------------------- elementwise

BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}


@pytest.mark.parametrize("op_type", sorted(BINARY))
def test_binary_ops_broadcast(run, op_type):
    a, b = rand(2, 3, 4), rand(3, 1, low=0.5, high=2.0)

    @mb.program(input_specs=[spec(2, 3, 4), spec(3, 1)])
    def prog(a, b):
        return getattr(mb, op_type)(x=a, y=b, name="y")

    (y,) = run(prog, op_type, a=a, b=b)
    np.testing.assert_allclose(y, BINARY[op_type](a, b), rtol=1e-6)


def test_pow(run):
    a = rand(3, 4, low=0.1, high=3.0)

    @mb.program(input_specs=[spec(3, 4)])
    def prog(a):
        return mb.pow(x=a, y=np.float32(1.7), name="y")

    (y,) = run(prog, "pow", a=a)
    np.testing.assert_allclose(y, a ** np.float32(1.7), rtol=1e-6)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


UNARY = {
    "relu": (lambda x: mb.relu(x=x, name="y"), lambda x: np.maximum(x, 0)),
    "relu6": (lambda x: mb.relu6(x=x, name="y"), lambda x: np.clip(x, 0, 6)),
    "sigmoid": (lambda x: mb.sigmoid(x=x, name="y"), _sigmoid),
    "tanh": (lambda x: mb.tanh(x=x, name="y"), np.tanh),
    "exp": (lambda x: mb.exp(x=x, name="y"), np.exp),
    "sqrt": (lambda x: mb.sqrt(x=x, name="y"), np.sqrt),
    "square": (lambda x: mb.square(x=x, name="y"), np.square),
    "rsqrt": (lambda x: mb.rsqrt(x=x, epsilon=1e-3, name="y"), lambda x: 1 / np.sqrt(x + 1e-3)),
    "log": (lambda x: mb.log(x=x, name="y"), np.log),
    "inverse": (lambda x: mb.inverse(x=x, name="y"), lambda x: 1 / (x + 1e-4)),
    "leaky_relu": (lambda x: mb.leaky_relu(x=x, alpha=0.2, name="y"), lambda x: np.where(x >= 0, x, 0.2 * x)),
    "clip": (lambda x: mb.clip(x=x, alpha=0.3, beta=0.7, name="y"), lambda x: np.clip(x, 0.3, 0.7)),
    "silu": (lambda x: mb.silu(x=x, name="y"), lambda x: x * _sigmoid(x)),
    "softplus": (lambda x: mb.softplus(x=x, name="y"), lambda x: np.log1p(np.exp(x))),
    "elu": (lambda x: mb.elu(x=x, alpha=0.5, name="y"), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    "gelu": (lambda x: mb.gelu(x=x, name="y"), lambda x: tf.nn.gelu(x, approximate=False).numpy()),
    "erf": (lambda x: mb.erf(x=x, name="y"), lambda x: tf.math.erf(x).numpy()),
}


@pytest.mark.parametrize("op_type", sorted(UNARY))
def test_unary_ops(run, op_type):
    build, reference = UNARY[op_type]
    positive_only = op_type in ("sqrt", "rsqrt", "log", "inverse")
    x = rand(2, 3, 5, low=0.05 if positive_only else -3.0, high=3.0)

    @mb.program(input_specs=[spec(2, 3, 5)])
    def prog(x):
        return build(x)

    (y,) = run(prog, op_type, x=x)
    np.testing.assert_allclose(y, reference(x), rtol=2e-6, atol=3e-7)


def test_prelu_has_one_slope_per_channel(run):
    x, alpha = rand(2, 3, 4, 4), np.array([0.1, 0.2, 0.3], np.float32)

    @mb.program(input_specs=[spec(2, 3, 4, 4)])
    def prog(x):
        return mb.prelu(x=x, alpha=alpha, name="y")

    (y,) = run(prog, "prelu", x=x)
    np.testing.assert_allclose(y, np.where(x >= 0, x, alpha.reshape(1, 3, 1, 1) * x), rtol=1e-6)


# ---------------------------------------------------------------- tensor ops

def test_concat_reshape_transpose(run):
    a, b = rand(2, 3, 4), rand(2, 5, 4)

    @mb.program(input_specs=[spec(2, 3, 4), spec(2, 5, 4)])
    def prog(a, b):
        joined = mb.concat(values=[a, b], axis=1)
        flat = mb.reshape(x=joined, shape=[2, -1, 2])
        return mb.transpose(x=flat, perm=[2, 0, 1], name="y")

    (y,) = run(prog, "concat", a=a, b=b)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=1).reshape(2, -1, 2).transpose(2, 0, 1))


def test_squeeze_expand_dims_pad_and_slice(run):
    x = rand(1, 3, 4)

    @mb.program(input_specs=[spec(1, 3, 4)])
    def prog(x):
        squeezed = mb.squeeze(x=x, axes=[0])
        expanded = mb.expand_dims(x=squeezed, axes=[-1])
        padded = mb.pad(x=expanded, pad=[1, 0, 2, 1, 0, 0], mode="constant", constant_val=9.0, name="p")
        return padded, mb.slice_by_index(x=padded, begin=[1, 0, 0], end=[3, 7, 1], stride=[1, 2, 1],
                                         squeeze_mask=[False, False, True], name="s")

    padded, sliced = run(prog, "slice_by_index", x=x)
    expected = np.pad(x[0][..., None], [(1, 0), (2, 1), (0, 0)], constant_values=9.0)
    np.testing.assert_array_equal(padded, expected)
    np.testing.assert_array_equal(sliced, expected[1:3, 0:7:2, 0])


def test_split_gives_every_part(run):
    x = rand(2, 7)

    @mb.program(input_specs=[spec(2, 7)])
    def prog(x):
        return mb.split(x=x, split_sizes=[2, 5], axis=1)

    first, second = run(prog, "split", x=x)
    np.testing.assert_array_equal(first, x[:, :2])
    np.testing.assert_array_equal(second, x[:, 2:])


def test_stack_tile_flatten_and_slice_by_size(run):
    a, b = rand(2, 3), rand(2, 3)

    @mb.program(input_specs=[spec(2, 3), spec(2, 3)])
    def prog(a, b):
        stacked = mb.stack(values=[a, b], axis=1, name="s")
        return (stacked, mb.tile(x=a, reps=[2, 1], name="t"), mb.flatten2d(x=stacked, axis=1, name="f"),
                mb.slice_by_size(x=stacked, begin=[1, 0, 1], size=[1, -1, 2], name="z"))

    stacked, tiled, flat, cut = run(prog, "stack", a=a, b=b)
    np.testing.assert_array_equal(stacked, np.stack([a, b], axis=1))
    np.testing.assert_array_equal(tiled, np.tile(a, (2, 1)))
    np.testing.assert_array_equal(flat, np.stack([a, b], axis=1).reshape(2, -1))
    np.testing.assert_array_equal(cut, np.stack([a, b], axis=1)[1:2, :, 1:3])


def test_gather(run):
    x = rand(5, 3)

    @mb.program(input_specs=[spec(5, 3)])
    def prog(x):
        return mb.gather(x=x, indices=np.array([4, 0, -1], np.int32), axis=0, name="y")

    (y,) = run(prog, "gather", x=x)
    np.testing.assert_array_equal(y, x[[4, 0, -1]])


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("op_type,reference", [
    ("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max),
    ("reduce_l2_norm", lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)))])
@pytest.mark.parametrize("axes,keep_dims", [([1], True), ([0, 2], False), ([-1], False)])
def test_reductions(run, op_type, reference, axes, keep_dims):
    x = rand(3, 4, 5)

    @mb.program(input_specs=[spec(3, 4, 5)])
    def prog(x):
        return getattr(mb, op_type)(x=x, axes=axes, keep_dims=keep_dims, name="y")

    (y,) = run(prog, op_type, x=x)
    np.testing.assert_allclose(y, reference(x, axis=tuple(axes), keepdims=keep_dims), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- dtypes

def test_fp16_results_are_rounded_like_the_device(run):
    x, c = rand(4, 64, low=-3, high=3), rand(64, low=-3, high=3)

    @mb.program(input_specs=[spec(4, 64)])
    def prog(x):
        half = mb.cast(x=x, dtype="fp16")
        total = mb.add(x=half, y=c.astype(np.float16))
        return mb.cast(x=total, dtype="fp32", name="y")

    (y,) = run(prog, "cast", x=x)
    expected = x.astype(np.float16) + c.astype(np.float16)  # NumPy rounds each fp16 op too
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    assert np.max(np.abs(y - (x + c))) > 1e-4  # rounding really happened


def test_fp16_conv_stays_within_half_precision(run):
    x, w = rand(1, 8, 6, 6), rand(4, 8, 3, 3)

    @mb.program(input_specs=[spec(1, 8, 6, 6)])
    def prog(x):
        y = mb.conv(x=mb.cast(x=x, dtype="fp16"), weight=w.astype(np.float16), pad_type="same")
        return mb.cast(x=y, dtype="fp32", name="y")

    (y,) = run(prog, "conv", x=x)
    exact = tf_nchw(tf.nn.conv2d, x.astype(np.float16).astype(np.float32),
                    w.astype(np.float16).astype(np.float32).transpose(2, 3, 1, 0), 1, "SAME")
    assert np.array_equal(y, y.astype(np.float16).astype(np.float32))  # every value is an fp16 number
    np.testing.assert_allclose(y, exact, rtol=2 ** -10, atol=1e-3)


def test_int32_values_and_casts(run):
    x = rand(2, 3, low=-5, high=5)

    @mb.program(input_specs=[spec(2, 3)])
    def prog(x):
        ints = mb.cast(x=x, dtype="int32")
        return mb.cast(x=mb.mul(x=ints, y=np.int32(3)), dtype="fp32", name="y")

    (y,) = run(prog, "cast", x=x)
    np.testing.assert_array_equal(y, (x.astype(np.int32) * 3).astype(np.float32))


# ---------------------------------------------------------------- errors and interface

def test_unknown_op_names_the_op_and_its_output(tmp_path, monkeypatch):
    from facecvt.validate.mil.ops import OPS

    @mb.program(input_specs=[spec(1, 4)])
    def prog(x):
        return mb.relu(x=x, name="activation")

    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    model.save(str(tmp_path / "m.mlpackage"))
    monkeypatch.delitem(OPS, "relu")
    with pytest.raises(FacecvtError, match=r"Core ML op 'relu' \(output 'activation'\) is not supported "
                                           r"by facecvt's reference executor"):
        MilExecutor(tmp_path / "m.mlpackage")


def test_wrong_input_shape_is_a_clear_error(run):
    @mb.program(input_specs=[spec(2, 3)])
    def prog(x):
        return mb.relu(x=x, name="y")

    with pytest.raises(FacecvtError, match=r"input 'x' takes shape \(2, 3\)"):
        run(prog, "relu", x=rand(3, 3))
