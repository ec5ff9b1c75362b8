"""Test-time augmentation, an inference choice of any model (its registry entry's `tta`): `wrap`
averages the outputs over the image and its mirror (level 1) and, at 2, their one-pixel diagonal
shifts. Applied after training: changing it reruns evaluation and export only, and every format
holds the wrapped model."""

from __future__ import annotations

import keras
from keras import layers, ops



# Each level's views, by their weights: the image and its mirror (1); each of them also shifted
# one pixel up-left and down-right (2). Level 0 is the image alone.
VIEW_WEIGHTS = {0: (1.0,), 1: (0.5, 0.5), 2: (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}


@keras.saving.register_keras_serializable(package="cifar")
class TestTimeAugmentation(layers.Layer):
    """`net`'s outputs averaged over its views (airbench94's weights at level 2), all through one
    call stacked on the batch axis, so every format holds each weight once. In training: `net`."""

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

    def views(self, x):
        if self.level == 1:
            return ops.concatenate([x, ops.flip(x, axis=2)], axis=0), VIEW_WEIGHTS[1]
        height, width = x.shape[1], x.shape[2]
        padded = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        up_left = padded[:, 0:height, 0:width, :]
        down_right = padded[:, 2:height + 2, 2:width + 2, :]
        stacked = [v for view in (x, up_left, down_right) for v in (view, ops.flip(view, axis=2))]
        return ops.concatenate(stacked, axis=0), VIEW_WEIGHTS[2]

    def call(self, x, training=None):
        if training or self.level == 0:
            return self.net(x, training=training)
        stacked, weights = self.views(x)
        outputs = self.net(stacked, training=False)
        batch = ops.shape(x)[0]
        return sum(weight * outputs[i * batch:(i + 1) * batch] for i, weight in enumerate(weights))

    def compute_output_shape(self, input_shape):
        return self.net.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "net": keras.saving.serialize_keras_object(self.net), "level": self.level}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        return cls(**config)


def wrap(model, level):
    """`model` with test-time augmentation at `level` (0: itself), input `image`, output `probabilities`."""
    if not level:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    # float32 in any precision: the views' probabilities are averaged as the model returns them.
    averaged = TestTimeAugmentation(model, level=level, name="tta", dtype="float32")(inputs)
    outputs = layers.Identity(name="probabilities", dtype="float32")(averaged)
    return keras.Model(inputs, outputs, name=model.name)
