"""Training-mode layers written the way TF1 slim leaves them in a graph.

Every batch norm and dropout is driven by a bool `phase_train` placeholder through v1
control flow (`Switch`/`Merge`), and batch-norm moving averages are updated inside the
training branch, forced by control dependencies (slim's `updates_collections=None`).
Variables are ref variables (`VariableV2`), so a graph frozen the facenet way carries the
`RefSwitch`->`Switch` and `AssignSub`->`Sub` rewrite.
"""

from __future__ import annotations

import numpy as np

from facecvt.core.tf_env import import_tf


class V1Cond:
    """The skeleton of one v1 `tf.cond` on `pred`: Switch(pred, pred), switch_t/f, pred_id."""

    def __init__(self, tf, pred, scope: str):
        self.tf = tf
        self.scope = scope
        with tf.compat.v1.name_scope(scope):
            false_out, true_out = tf.raw_ops.Switch(data=pred, pred=pred, name="Switch")
            self.switch_t = tf.identity(true_out, name="switch_t")
            self.switch_f = tf.identity(false_out, name="switch_f")
            self.pred_id = tf.identity(pred, name="pred_id")

    def switch(self, value, name: str):
        """(false, true) outputs of a Switch of `value` on this cond's predicate."""
        with self.tf.compat.v1.name_scope(self.scope):
            if value.dtype._is_ref_dtype:
                return self.tf.raw_ops.RefSwitch(data=value, pred=self.pred_id, name=name)
            return self.tf.raw_ops.Switch(data=value, pred=self.pred_id, name=name)

    def merge(self, false_value, true_value, name: str = "Merge"):
        with self.tf.compat.v1.name_scope(self.scope):
            return self.tf.raw_ops.Merge(inputs=[false_value, true_value], name=name)[0]


class TrainingLayers:
    """Builds layers into the current default graph, taking initial values from `params`.

    `params(name, shape)` returns the NumPy value of the variable `name`; variables are
    created with a zeros initializer whose value is fed at initialisation
    (see `initialize`), so the meta graph does not embed the weights twice.
    """

    def __init__(self, params, phase_train, *, bn_op: str = "FusedBatchNorm", decay: float = 0.995,
                 epsilon: float = 0.001):
        self.tf = import_tf()
        self.params = params
        self.phase_train = phase_train
        self.bn_op = bn_op
        self.decay = decay
        self.epsilon = epsilon
        self.values = {}  # variable -> value to load

    def variable(self, scope: str, name: str, shape) -> object:
        tf = self.tf
        full = f"{scope}{name}"
        value = np.asarray(self.params(full, tuple(shape)), dtype=np.float32)
        if value.shape != tuple(shape):
            raise ValueError(f"{full}: parameter shape {value.shape} != {tuple(shape)}")
        with tf.compat.v1.name_scope(scope):
            var = tf.compat.v1.Variable(tf.zeros(shape), name=name, use_resource=False)
        self.values[var] = value
        return var

    def initialize(self, session) -> None:
        """Run every variable's initializer once, feeding its value (one session call, not one per variable)."""
        feeds = {var.initializer.inputs[1]: value for var, value in self.values.items()}
        session.run([var.initializer for var in self.values], feed_dict=feeds)

    # -- batch norm ---------------------------------------------------------------------
    def _fused_bn(self, x, scale, offset, mean, variance, *, training: bool, name: str):
        tf = self.tf
        op = getattr(tf.raw_ops, self.bn_op)
        return op(x=x, scale=scale, offset=offset, mean=mean, variance=variance,
                  epsilon=self.epsilon, is_training=training, name=name)[:3]

    def batch_norm(self, x, scope: str):
        """slim.batch_norm(fused=True, scale=False, updates_collections=None, is_training=phase_train)."""
        tf = self.tf
        bn = f"{scope}BatchNorm/"
        channels = int(x.shape[-1])
        beta = self.variable(bn, "beta", [channels])
        moving_mean = self.variable(bn, "moving_mean", [channels])
        moving_variance = self.variable(bn, "moving_variance", [channels])
        with tf.compat.v1.name_scope(bn):
            gamma = tf.constant(np.ones(channels, np.float32), name="Const")
            original_shape = None
            if x.shape.rank == 2:  # the fused kernel wants 4-D: slim reshapes around it
                original_shape = tf.shape(x, name="Shape")
                x = tf.reshape(x, [-1, 1, 1, channels], name="Reshape")

        cond = V1Cond(tf, self.phase_train, f"{bn}cond/")
        x_f, x_t = cond.switch(x, "FusedBatchNorm/Switch")
        g_f, g_t = cond.switch(gamma, "FusedBatchNorm/Switch_1")
        b_f, b_t = cond.switch(beta.value(), "FusedBatchNorm/Switch_2")
        with tf.compat.v1.name_scope(cond.scope), tf.control_dependencies([cond.switch_t]):
            empty = tf.constant([], dtype=tf.float32, name="Const")
        y_t, batch_mean, batch_var = self._fused_bn(x_t, g_t, b_t, empty, empty, training=True,
                                                    name=f"{cond.scope}FusedBatchNorm")
        m_f, _ = cond.switch(moving_mean.value(), "FusedBatchNorm_1/Switch_3")
        v_f, _ = cond.switch(moving_variance.value(), "FusedBatchNorm_1/Switch_4")
        y_f, _, _ = self._fused_bn(x_f, g_f, b_f, m_f, v_f, training=False,
                                   name=f"{cond.scope}FusedBatchNorm_1")
        outputs = cond.merge(y_f, y_t)
        mean = cond.merge(m_f, batch_mean, "Merge_1")
        variance = cond.merge(v_f, batch_var, "Merge_2")
        outputs = self._force_updates(bn, outputs, (moving_mean, mean), (moving_variance, variance))
        if original_shape is not None:
            outputs = tf.reshape(outputs, original_shape, name=f"{bn}Reshape_1")
        return outputs

    def unfused_batch_norm(self, x, scope: str):
        """tf.nn.batch_normalization under a v1 cond: batch moments in training, moving ones otherwise.

        Written as the mul/add chain (no FusedBatchNorm), on a tensor of any rank.
        """
        tf = self.tf
        bn = f"{scope}BatchNorm/"
        channels = int(x.shape[-1])
        gamma = self.variable(bn, "gamma", [channels])
        beta = self.variable(bn, "beta", [channels])
        moving_mean = self.variable(bn, "moving_mean", [channels])
        moving_variance = self.variable(bn, "moving_variance", [channels])
        cond = V1Cond(tf, self.phase_train, f"{bn}cond/")
        x_f, x_t = cond.switch(x, "Switch_1")
        with tf.compat.v1.name_scope(f"{cond.scope}moments/"):
            mean_t, var_t = tf.nn.moments(x_t, list(range(x.shape.rank - 1)))
        with tf.compat.v1.name_scope(f"{cond.scope}train/"):
            y_t = tf.nn.batch_normalization(x_t, mean_t, var_t, beta.value(), gamma.value(), self.epsilon)
        m_f, _ = cond.switch(moving_mean.value(), "Switch_2")
        v_f, _ = cond.switch(moving_variance.value(), "Switch_3")
        with tf.compat.v1.name_scope(f"{cond.scope}infer/"):
            y_f = tf.nn.batch_normalization(x_f, m_f, v_f, beta.value(), gamma.value(), self.epsilon)
        outputs = cond.merge(y_f, y_t)
        mean = cond.merge(m_f, mean_t, "Merge_1")
        variance = cond.merge(v_f, var_t, "Merge_2")
        return self._force_updates(bn, outputs, (moving_mean, mean), (moving_variance, variance))

    def prelu(self, x, scope: str):
        """insightface's PReLU: relu(x) + alpha * (x - |x|) * 0.5."""
        tf = self.tf
        alpha = self.variable(f"{scope}/", "alpha", [int(x.shape[-1])])
        with tf.compat.v1.name_scope(f"{scope}/prelu/"):
            negative = tf.multiply(tf.multiply(alpha.value(), tf.subtract(x, tf.abs(x))), 0.5)
            return tf.add(tf.nn.relu(x), negative, name="add")

    def _force_updates(self, bn: str, outputs, *updates):
        """slim's `_force_updates`: in the training branch, the output waits on the moving-average
        updates (control dependencies); in the inference branch it passes through."""
        tf = self.tf
        cond = V1Cond(tf, self.phase_train, f"{bn}cond_1/")
        assigns = [self._assign_moving_average(cond, variable, value, "AssignMovingAvg" + (f"_{i}" if i else ""))
                   for i, (variable, value) in enumerate(updates)]
        out_f, out_t = cond.switch(outputs, "Switch_1")
        with tf.compat.v1.name_scope(cond.scope), tf.control_dependencies(assigns):
            forced = tf.identity(out_t, name="Identity")
        return cond.merge(out_f, forced)

    def _assign_moving_average(self, cond: V1Cond, variable, value, name: str):
        """variable -= (variable - value) * (1 - decay), in the training branch."""
        tf = self.tf
        _, var_t = cond.switch(variable._ref(), f"{name}/Switch")
        _, value_t = cond.switch(value, f"{name}/Switch_1")
        with tf.compat.v1.name_scope(f"{cond.scope}{name}/"):
            with tf.control_dependencies([cond.switch_t]):
                decay = tf.constant(1.0 - self.decay, name="decay")
            delta = tf.multiply(tf.subtract(var_t, value_t, name="sub"), decay, name="mul")
        return tf.raw_ops.AssignSub(ref=var_t, value=delta, name=f"{cond.scope}{name}")

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x, filters: int, kernel, scope: str, *, stride: int = 1, padding: str = "SAME",
             normalize: bool = True, activation=True, depthwise: bool = False):
        """slim.conv2d: Conv2D (no bias when batch-normalised), BatchNorm, Relu."""
        tf = self.tf
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        in_ch = int(x.shape[-1])
        s = f"{scope}/"
        if depthwise:
            weights = self.variable(s, "depthwise_weights", [kh, kw, in_ch, filters // in_ch])
            with tf.compat.v1.name_scope(s):
                y = tf.nn.depthwise_conv2d(x, weights.value(), [1, stride, stride, 1], padding, name="depthwise")
        else:
            weights = self.variable(s, "weights", [kh, kw, in_ch, filters])
            with tf.compat.v1.name_scope(s):
                y = tf.nn.conv2d(x, weights.value(), [1, stride, stride, 1], padding, name="Conv2D")
        if normalize:
            y = self.batch_norm(y, s)
        else:
            biases = self.variable(s, "biases", [filters])
            with tf.compat.v1.name_scope(s):
                y = tf.nn.bias_add(y, biases.value(), name="BiasAdd")
        if activation is True:
            with tf.compat.v1.name_scope(s):
                y = tf.nn.relu(y, name="Relu")
        elif activation:
            y = activation(y, s)
        return y

    def dense(self, x, units: int, scope: str, *, normalize: bool = True):
        """slim.fully_connected(activation_fn=None) with a batch norm instead of biases."""
        tf = self.tf
        s = f"{scope}/"
        weights = self.variable(s, "weights", [int(x.shape[-1]), units])
        with tf.compat.v1.name_scope(s):
            y = tf.linalg.matmul(x, weights.value(), name="MatMul")
        if normalize:
            return self.batch_norm(y, s)
        biases = self.variable(s, "biases", [units])
        with tf.compat.v1.name_scope(s):
            return tf.nn.bias_add(y, biases.value(), name="BiasAdd")

    def dropout(self, x, keep_prob: float, scope: str):
        """slim.dropout(is_training=phase_train): RandomUniform mask in the training branch."""
        tf = self.tf
        cond = V1Cond(tf, self.phase_train, f"{scope}/cond/")
        x_f, x_t = cond.switch(x, "dropout/Switch")
        with tf.compat.v1.name_scope(f"{cond.scope}dropout/"):
            with tf.control_dependencies([cond.switch_t]):
                keep = tf.constant(keep_prob, name="keep_prob")
            noise = tf.random.uniform(tf.shape(x_t), name="random_uniform")
            mask = tf.floor(tf.add(keep, noise), name="Floor")
            dropped = tf.multiply(tf.divide(x_t, keep, name="div"), mask, name="mul")
        with tf.compat.v1.name_scope(cond.scope):
            passed = tf.identity(x_f, name="Identity")
        return cond.merge(passed, dropped)

    def flatten(self, x, scope: str):
        """slim.flatten: Reshape to (batch, -1) with the batch taken from Shape at run time."""
        tf = self.tf
        with tf.compat.v1.name_scope(f"{scope}/flatten/"):
            batch = tf.shape(x, name="Shape")[0]
            shape = tf.stack([batch, -1], name="Reshape/shape")
            flat = tf.reshape(x, shape, name="Reshape")
        flat.set_shape([None, int(np.prod(x.shape[1:]))])
        return flat


def facenet_input_queue(tf, image_size: int, channels: int = 3):
    """facenet's training input: a FIFO queue dequeued by `batch_join`, `input` an Identity of it.

    Returns (input_tensor, label_batch, batch_size placeholder).
    """
    batch_size = tf.compat.v1.placeholder(tf.int32, name="batch_size")
    queue = tf.raw_ops.FIFOQueueV2(component_types=[tf.float32, tf.int64],
                                   shapes=[[image_size, image_size, channels], []],
                                   capacity=128, name="batch_join/fifo_queue")
    images, labels = tf.raw_ops.QueueDequeueUpToV2(handle=queue, n=batch_size,
                                                   component_types=[tf.float32, tf.int64], name="batch_join")
    images.set_shape([None, image_size, image_size, channels])  # as tf.train.batch_join does
    image_batch = tf.identity(images, name="image_batch")
    input_tensor = tf.identity(image_batch, name="input")
    label_batch = tf.identity(labels, name="label_batch")
    return input_tensor, label_batch, batch_size
