"""airbench's optimizer and schedule for the fast model: SGD with a higher rate for biases, coupled
L2, lookahead in the graph and optionally Muon for the 3x3 filters (`BiasScaledSGD`), on a
warm-up/decay schedule per step (`WarmupDecay`). Registered under `cifar.models.fast`, which
imports them, so a saved model names the module that loads them."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cifar.models.fast")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-linear rate per step: peak x start at 0, peak at `warmup_steps`, peak x end at the end."""

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
    """Lookahead's slow copies, plain tf.Variables: neither a saved model nor a backup holds them."""

    def __init__(self, weights):
        import tensorflow as tf

        self.weights = [w.value for w in weights]  # the tf.Variables behind Keras' variables
        self.slow = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False, name="lookahead_slow")
                     for w in self.weights]


@keras.saving.register_keras_serializable(package="cifar.models.fast")
class BiasScaledSGD(keras.optimizers.SGD):
    """SGD with bias gradients scaled by `bias_scale` and coupled L2 `l2` (through the momentum, as
    PyTorch's weight_decay).

    Lookahead (`lookahead_every` > 0), in the graph: every N steps and at each epoch's end, slow =
    decay * slow + (1 - decay) * fast and the model continues from slow, decay = lookahead_decay *
    (step / total)**3. It averages the weights given to `watch`; `start_lookahead` sets the slow
    copies (StartLookahead, after a resume's restore). No step waits on the host.

    `whiten_bias_steps`: the whitening bias trains that many steps at the plain rate, then its
    gradient is zero (its momentum fades). `muon_scale` > 0: every 4-D kernel takes Muon's step
    (airbench94_muon): Nesterov momentum, the filter rescaled to norm sqrt(out), a step along the
    momentum's Newton-Schulz orthogonalisation; no L2 for them."""

    def __init__(self, bias_scale=1.0, l2=0.0, lookahead_every=0, lookahead_decay=0.0, total_steps=1,
                 steps_per_epoch=1, muon_scale=0.0, muon_momentum=0.6, newton_schulz_steps=3,
                 whiten_bias_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.bias_scale, self.l2 = float(bias_scale), float(l2)
        self.lookahead_every, self.lookahead_decay = int(lookahead_every), float(lookahead_decay)
        self.total_steps, self.steps_per_epoch = int(total_steps), int(steps_per_epoch)
        self.muon_scale, self.muon_momentum = float(muon_scale), float(muon_momentum)
        self.newton_schulz_steps = int(newton_schulz_steps)
        self.whiten_bias_steps = int(whiten_bias_steps)
        self._lookahead = None

    def takes_muon(self, variable):
        return bool(self.muon_scale) and len(variable.shape) == 4

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.muon_scale:  # one buffer per variable, so Keras' index finds it; only the filters' are used
            self.muon_momentums = self.add_optimizer_variables(variables, "muon_momentum")

    def update_step(self, gradient, variable, learning_rate):
        if not self.takes_muon(variable):
            return super().update_step(gradient, variable, learning_rate)
        # Keras passes the backend's variable here (a tf.Variable, a replica's under a strategy), so
        # its slot is found as Keras' own optimizers and its custom-optimizer example find theirs:
        # _get_variable_index, the one lookup that resolves every such form (tests/test_fast.py).
        buffer = self.muon_momentums[self._get_variable_index(variable)]
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(buffer, buffer * self.muon_momentum + gradient)
        direction = gradient + self.muon_momentum * buffer  # Nesterov
        k_h, k_w, c_in, c_out = variable.shape
        as_matrix = ops.reshape(ops.transpose(direction, (3, 0, 1, 2)), (c_out, k_h * k_w * c_in))
        update = ops.transpose(ops.reshape(orthogonalise(as_matrix, self.newton_schulz_steps),
                                           (c_out, k_h, k_w, c_in)), (1, 2, 3, 0))
        weight = variable * (c_out ** 0.5 / (ops.norm(ops.reshape(variable, (-1,))) + 1e-12))
        rate = ops.cast(learning_rate, variable.dtype) * self.muon_scale
        self.assign(variable, weight - rate * update)

    def watch(self, weights):
        """Average these weights (the float ones); call after compile, in the strategy's scope."""
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
                whiten_bias = variable.path.split("/")[-2:] == ["whiten", "bias"]
                if variable.path.endswith(("/beta", "/bias")) and not whiten_bias:
                    grad = grad * self.bias_scale
                if self.l2 and not self.takes_muon(variable):
                    grad = grad + self.l2 * variable.value
                if whiten_bias:  # self.iterations: the steps taken before this one
                    grad = grad * ops.cast(self.iterations < self.whiten_bias_steps, grad.dtype)
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
                "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
                "muon_scale": self.muon_scale, "muon_momentum": self.muon_momentum,
                "newton_schulz_steps": self.newton_schulz_steps, "whiten_bias_steps": self.whiten_bias_steps}


def orthogonalise(matrix, steps):
    """Muon's approximate orthogonalisation of a 2-D `matrix`: `steps` of the quintic Newton-Schulz
    iteration with Keller Jordan's coefficients (singular values end near 0.7-1.2), on the wide side."""
    a, b, c = 3.4445, -4.7750, 2.0315
    rows, cols = matrix.shape
    x = matrix / (ops.norm(matrix) + 1e-7)
    if rows > cols:
        x = ops.transpose(x)
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if rows > cols else x
