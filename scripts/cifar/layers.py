"""Keras layers, a schedule and an optimizer of our own, registered so that a saved .keras model
loads anywhere this module is imported (cifar.inference and cifar.evaluation import it before
loading a model).

TestTimeAugmentation puts test-time augmentation inside the model: in training it is the wrapped
network; at inference (evaluate, predict, every exported format) it averages the network's logits
over the image, its mirror image and, at level 2, the two one-pixel diagonal translations of
each. So the accuracy the pipeline reports is the accuracy a user of any artifact gets.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="cifar")
class TestTimeAugmentation(layers.Layer):
    """Average `net`'s outputs (logits) over flips (level >= 1) and 1 px translations (level 2).

    Level 2 is airbench94's: 0.5 x (image and its mirror) + 0.25 x (shifted up-left, and its
    mirror) + 0.25 x (shifted down-right, and its mirror); a shift reflect-pads by one pixel and
    crops. NHWC input.
    """

    def __init__(self, net, level=2, **kwargs):
        super().__init__(**kwargs)
        if level not in (0, 1, 2):
            raise ValueError(f"TestTimeAugmentation level must be 0, 1 or 2, got {level!r}")
        self.net = net
        self.level = level

    def build(self, input_shape):
        if not self.net.built:
            self.net.build(input_shape)
        self.built = True

    def _both_ways(self, x):
        return 0.5 * (self.net(x, training=False) + self.net(ops.flip(x, axis=2), training=False))

    def call(self, x, training=None):
        if training or self.level == 0:
            return self.net(x, training=training)
        if self.level == 1:
            return self._both_ways(x)
        height, width = x.shape[1], x.shape[2]
        padded = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        up_left = padded[:, 0:height, 0:width, :]
        down_right = padded[:, 2:height + 2, 2:width + 2, :]
        return (0.5 * self._both_ways(x) + 0.25 * self._both_ways(up_left)
                + 0.25 * self._both_ways(down_right))

    def compute_output_shape(self, input_shape):
        return self.net.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "net": keras.saving.serialize_keras_object(self.net), "level": self.level}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="cifar")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-linear learning rate per step: `peak` x multipliers[0] at step 0, `peak` at
    `warmup_steps`, `peak` x multipliers[1] at `total_steps` (airbench's triangle)."""

    def __init__(self, peak, total_steps, warmup_steps, start=0.2, end=0.07):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.start, self.end = float(start), float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = max(self.warmup_steps, 1)
        rising = self.start + (1.0 - self.start) * step / warm
        falling = 1.0 + (self.end - 1.0) * (step - warm) / max(self.total_steps - warm, 1)
        return self.peak * ops.where(step < warm, rising, ops.maximum(falling, self.end))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "start": self.start, "end": self.end}


class _SlowWeights:
    """Lookahead's slow copies: plain tf.Variables, not the optimizer's own, so that neither a
    saved model nor a resume backup holds them (they equal the weights at every epoch's end)."""

    def __init__(self, weights):
        import tensorflow as tf

        self.weights = [w.value for w in weights]  # the tf.Variables behind Keras' variables
        self.slow = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False, name="lookahead_slow")
                     for w in self.weights]


@keras.saving.register_keras_serializable(package="cifar")
class BiasScaledSGD(keras.optimizers.SGD):
    """SGD whose bias (BN beta, dense bias) gradients are scaled by `bias_scale` (a higher learning
    rate for them, as airbench), with coupled L2 weight decay `l2` added to every gradient (it
    passes through the momentum, as PyTorch's SGD weight_decay does).

    With `lookahead_every` > 0, airbench's lookahead, in the graph: every `lookahead_every` steps,
    and at each epoch's last step (so validation and the backup see the same weights), the slow
    weights move toward the fast ones, slow = decay * slow + (1 - decay) * fast, and the model
    continues from them. `decay` grows as lookahead_decay * (step / total_steps)**3: no averaging
    early, strong averaging at the end. The weights it averages are those given to `watch` (the
    model's float weights, BatchNormalization's moving statistics included); `start_lookahead`
    sets the slow copies to the weights, before the first step of a run or of a resumed run
    (cifar.training calls it at the first epoch's start, after a resume has restored the
    weights). No step waits on the host, and it works with any `steps_per_execution`.
    """

    def __init__(self, bias_scale=1.0, l2=0.0, lookahead_every=0, lookahead_decay=0.0, total_steps=1,
                 steps_per_epoch=1, **kwargs):
        super().__init__(**kwargs)
        self.bias_scale, self.l2 = float(bias_scale), float(l2)
        self.lookahead_every, self.lookahead_decay = int(lookahead_every), float(lookahead_decay)
        self.total_steps, self.steps_per_epoch = int(total_steps), int(steps_per_epoch)
        self._lookahead = None

    def watch(self, weights):
        """Average these weights (a model's `weights`: its float ones take part). Call it in the
        strategy's scope, after compile and before fit."""
        if self.lookahead_every:
            self._lookahead = _SlowWeights([w for w in weights if "float" in str(w.dtype)])

    def start_lookahead(self):
        """slow = weights, now (eagerly, between steps)."""
        for slow, weight in zip(self._lookahead.slow, self._lookahead.weights):
            slow.assign(weight.read_value())

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        scaled = []
        for grad, variable in zip(grads, variables):
            if grad is not None:
                if variable.path.endswith(("/beta", "/bias")):
                    grad = grad * self.bias_scale
                if self.l2:
                    grad = grad + self.l2 * variable.value
            scaled.append(grad)
        if not self.lookahead_every:
            return super().apply(scaled, trainable_variables)
        if self._lookahead is None:
            raise ValueError("BiasScaledSGD with lookahead_every > 0 needs optimizer.watch(model.weights) "
                             "after compile and before fit")
        result = super().apply(scaled, trainable_variables)
        self._in_cross_replica(self._step)
        return result

    @staticmethod
    def _in_cross_replica(fn):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None:  # already in cross-replica context
            return fn(tf.distribute.get_strategy())
        return context.merge_call(fn)

    def _step(self, strategy):
        import tensorflow as tf

        state = self._lookahead
        step = tf.cast(self.iterations.value.read_value(), tf.int64)  # this step's number, counted from 1
        due = tf.logical_or(tf.equal(step % self.lookahead_every, 0), tf.equal(step % self.steps_per_epoch, 0))
        fraction = tf.minimum(tf.cast(step, tf.float32) / self.total_steps, 1.0)
        decay = self.lookahead_decay * fraction**3

        def blend():
            for slow, weight in zip(state.slow, state.weights):
                strategy.extended.update(
                    slow, lambda s, w: s.assign(tf.cast(decay, s.dtype) * s + tf.cast(1 - decay, s.dtype) * w),
                    args=(weight,))
                strategy.extended.update(weight, lambda w, s: w.assign(s), args=(slow,))
            return tf.constant(True)

        tf.cond(due, blend, lambda: tf.constant(False))

    def get_config(self):
        return {**super().get_config(), "bias_scale": self.bias_scale, "l2": self.l2,
                "lookahead_every": self.lookahead_every, "lookahead_decay": self.lookahead_decay,
                "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="cifar")
def gelu_tanh(x):
    """GELU in its tanh approximation. The exact one lowers to Erfc, which TF.js cannot run; the
    two differ by less than 1e-3 everywhere."""
    return keras.activations.gelu(x, approximate=True)
