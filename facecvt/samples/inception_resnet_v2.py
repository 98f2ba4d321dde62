"""Inception-ResNet-v2 as facenet defines it (src/models/inception_resnet_v2.py), node names included.

Its blocks have v1's shape with wider branches, a Mixed_5b stem block, twice as many blocks and a
1536-channel Conv2d_7b_1x1 before the pooling: about 2.5x v1's weights.
"""

from __future__ import annotations

from facecvt.samples.inception_resnet_v1 import (_max_pool, block8, block17, block35, reduction_a, reduction_b,
                                                  stem)

ROOT = "InceptionResnetV2"


# v2's branch widths for v1's block builders
BLOCK35_WIDTHS = (32, (32, 32), (32, 48, 64))
BLOCK17_WIDTHS = (192, (128, 160, 192))
BLOCK8_WIDTHS = (192, (192, 224, 256))
MIXED_7A_WIDTHS = ((256, 384), (256, 288), (256, 288, 320))  # v1's reduction_b, wider


def mixed_5b(layers, net, scope: str):
    conv, tf = layers.conv, layers.tf
    b0 = conv(net, 96, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, 48, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 64, 5, f"{scope}/Branch_1/Conv2d_0b_5x5")
    b2 = conv(net, 64, 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 96, 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, 96, 3, f"{scope}/Branch_2/Conv2d_0c_3x3")
    b3 = tf.nn.avg_pool2d(net, 3, 1, "SAME", name=f"{scope}/Branch_3/AvgPool_0a_3x3/AvgPool")
    b3 = conv(b3, 64, 1, f"{scope}/Branch_3/Conv2d_0b_1x1")
    return tf.concat([b0, b1, b2, b3], 3, name=f"{scope}/concat")


def inception_resnet_v2(layers, images, *, bottleneck_size: int = 512, keep_prob: float = 0.8):
    """The prelogits (bottleneck, batch-normalised, before L2 normalisation) of `images`."""
    conv, r, tf = layers.conv, ROOT, layers.tf
    net = stem(layers, images, r)
    net = _max_pool(layers, net, f"{r}/MaxPool_5a_3x3")
    net = mixed_5b(layers, net, f"{r}/Mixed_5b")
    for i in range(1, 11):
        net = block35(layers, net, f"{r}/Repeat/block35_{i}", widths=BLOCK35_WIDTHS)
    net = reduction_a(layers, net, f"{r}/Mixed_6a", k=256, l=256, m=384, n=384)
    for i in range(1, 21):
        net = block17(layers, net, f"{r}/Repeat_1/block17_{i}", widths=BLOCK17_WIDTHS)
    net = reduction_b(layers, net, f"{r}/Mixed_7a", widths=MIXED_7A_WIDTHS)
    for i in range(1, 10):
        net = block8(layers, net, f"{r}/Repeat_2/block8_{i}", widths=BLOCK8_WIDTHS)
    net = block8(layers, net, f"{r}/Block8", scale=1.0, activation=False, widths=BLOCK8_WIDTHS)
    net = conv(net, 1536, 1, f"{r}/Conv2d_7b_1x1")
    size = [int(net.shape[1]), int(net.shape[2])]
    net = tf.nn.avg_pool2d(net, size, 1, "VALID", name=f"{r}/Logits/AvgPool_1a_8x8/AvgPool")
    net = layers.flatten(net, f"{r}/Logits/Flatten")
    net = layers.dropout(net, keep_prob, f"{r}/Logits/Dropout")
    return layers.dense(net, bottleneck_size, f"{r}/Bottleneck")
