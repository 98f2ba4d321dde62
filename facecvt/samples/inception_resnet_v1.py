"""Inception-ResNet-v1 as facenet defines it (src/models/inception_resnet_v1.py), node names included."""

from __future__ import annotations

ROOT = "InceptionResnetV1"


def _residual(layers, net, up, scale: float, scope: str, activation: bool):
    """net += scale * up; then Relu (facenet's block epilogue)."""
    tf = layers.tf
    with tf.compat.v1.name_scope(f"{scope}/"):
        net = tf.add(net, tf.multiply(tf.constant(scale, name="mul/x"), up, name="mul"), name="add")
        if activation:
            net = tf.nn.relu(net, name="Relu")
    return net


def block35(layers, net, scope: str, scale: float = 0.17, activation: bool = True, widths=(32, (32, 32), (32, 32, 32))):
    """35x35 residual block; `widths` = (Branch_0, Branch_1's two convs, Branch_2's three convs)."""
    conv, (w0, w1, w2) = layers.conv, widths
    b0 = conv(net, w0, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, w1[0], 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, w1[1], 3, f"{scope}/Branch_1/Conv2d_0b_3x3")
    b2 = conv(net, w2[0], 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, w2[1], 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, w2[2], 3, f"{scope}/Branch_2/Conv2d_0c_3x3")
    return _up_and_add(layers, net, [b0, b1, b2], scale, scope, activation)


def block17(layers, net, scope: str, scale: float = 0.10, activation: bool = True, widths=(128, (128, 128, 128))):
    """17x17 residual block (1x7 then 7x1); `widths` = (Branch_0, Branch_1's three convs)."""
    return _factorized_block(layers, net, scope, scale, activation, widths, 7)


def block8(layers, net, scope: str, scale: float = 0.20, activation: bool = True, widths=(192, (192, 192, 192))):
    """8x8 residual block (1x3 then 3x1); `widths` = (Branch_0, Branch_1's three convs)."""
    return _factorized_block(layers, net, scope, scale, activation, widths, 3)


def _factorized_block(layers, net, scope: str, scale: float, activation: bool, widths, k: int):
    """A 1x1 branch beside 1x1 -> 1xk -> kx1, added back: block17 (k=7) and block8 (k=3)."""
    conv, (w0, w1) = layers.conv, widths
    b0 = conv(net, w0, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, w1[0], 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, w1[1], (1, k), f"{scope}/Branch_1/Conv2d_0b_1x{k}")
    b1 = conv(b1, w1[2], (k, 1), f"{scope}/Branch_1/Conv2d_0c_{k}x1")
    return _up_and_add(layers, net, [b0, b1], scale, scope, activation)


def _up_and_add(layers, net, branches: list, scale: float, scope: str, activation: bool):
    """Concatenate the branches, project back to net's channels with a 1x1 conv (bias, no batch norm), add."""
    mixed = layers.tf.concat(branches, 3, name=f"{scope}/concat")
    up = layers.conv(mixed, int(net.shape[-1]), 1, f"{scope}/Conv2d_1x1", normalize=False, activation=None)
    return _residual(layers, net, up, scale, scope, activation)


def _max_pool(layers, net, name: str):
    return layers.tf.nn.max_pool2d(net, 3, 2, "VALID", name=f"{name}/MaxPool")


def reduction_a(layers, net, scope: str, k=192, l=192, m=256, n=384):
    conv = layers.conv
    b0 = conv(net, n, 3, f"{scope}/Branch_0/Conv2d_1a_3x3", stride=2, padding="VALID")
    b1 = conv(net, k, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, l, 3, f"{scope}/Branch_1/Conv2d_0b_3x3")
    b1 = conv(b1, m, 3, f"{scope}/Branch_1/Conv2d_1a_3x3", stride=2, padding="VALID")
    b2 = _max_pool(layers, net, f"{scope}/Branch_2/MaxPool_1a_3x3")
    return layers.tf.concat([b0, b1, b2], 3, name=f"{scope}/concat")


def reduction_b(layers, net, scope: str, widths=((256, 384), (256, 256), (256, 256, 256))):
    """17x17 -> 8x8; `widths` = (Branch_0's two convs, Branch_1's two, Branch_2's three)."""
    conv, (w0, w1, w2) = layers.conv, widths
    b0 = conv(net, w0[0], 1, f"{scope}/Branch_0/Conv2d_0a_1x1")
    b0 = conv(b0, w0[1], 3, f"{scope}/Branch_0/Conv2d_1a_3x3", stride=2, padding="VALID")
    b1 = conv(net, w1[0], 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, w1[1], 3, f"{scope}/Branch_1/Conv2d_1a_3x3", stride=2, padding="VALID")
    b2 = conv(net, w2[0], 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, w2[1], 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, w2[2], 3, f"{scope}/Branch_2/Conv2d_1a_3x3", stride=2, padding="VALID")
    b3 = _max_pool(layers, net, f"{scope}/Branch_3/MaxPool_1a_3x3")
    return layers.tf.concat([b0, b1, b2, b3], 3, name=f"{scope}/concat")


def stem(layers, images, r: str = ROOT):
    """Conv2d_1a_3x3 .. Conv2d_4a_3x3 under scope `r`: the layers Inception-ResNet-v1 and v2 begin with alike."""
    conv = layers.conv
    net = conv(images, 32, 3, f"{r}/Conv2d_1a_3x3", stride=2, padding="VALID")
    net = conv(net, 32, 3, f"{r}/Conv2d_2a_3x3", padding="VALID")
    net = conv(net, 64, 3, f"{r}/Conv2d_2b_3x3")
    net = _max_pool(layers, net, f"{r}/MaxPool_3a_3x3")
    net = conv(net, 80, 1, f"{r}/Conv2d_3b_1x1", padding="VALID")
    return conv(net, 192, 3, f"{r}/Conv2d_4a_3x3", padding="VALID")


def inception_resnet_v1(layers, images, *, bottleneck_size: int = 512, keep_prob: float = 0.8):
    """The prelogits (bottleneck, batch-normalised, before L2 normalisation) of `images`."""
    conv, r = layers.conv, ROOT
    net = stem(layers, images)
    net = conv(net, 256, 3, f"{r}/Conv2d_4b_3x3", stride=2, padding="VALID")
    for i in range(1, 6):
        net = block35(layers, net, f"{r}/Repeat/block35_{i}")
    net = reduction_a(layers, net, f"{r}/Mixed_6a")
    for i in range(1, 11):
        net = block17(layers, net, f"{r}/Repeat_1/block17_{i}")
    net = reduction_b(layers, net, f"{r}/Mixed_7a")
    for i in range(1, 6):
        net = block8(layers, net, f"{r}/Repeat_2/block8_{i}")
    net = block8(layers, net, f"{r}/Block8", scale=1.0, activation=False)
    tf = layers.tf
    size = [int(net.shape[1]), int(net.shape[2])]
    net = tf.nn.avg_pool2d(net, size, 1, "VALID", name=f"{r}/Logits/AvgPool_1a_8x8/AvgPool")
    net = layers.flatten(net, f"{r}/Logits/Flatten")
    net = layers.dropout(net, keep_prob, f"{r}/Logits/Dropout")
    return layers.dense(net, bottleneck_size, f"{r}/Bottleneck")
