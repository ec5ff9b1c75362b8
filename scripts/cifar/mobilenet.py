"""MobileNetV2 with a new head: the ImageNet backbone fine-tuned on CIFAR-10. A module of its own,
so that only the `finetune_mobilenet` stage depends on it."""

from __future__ import annotations

import keras
from keras import layers

from cifar import params
from cifar.data import IMAGE_SHAPE as INPUT_SHAPE
from cifar.data import NUM_CLASSES

# The `finetune_mobilenet` section, checked here rather than in cifar.params, so that changing it
# touches this model's stage only.
SCHEMA = {
    "weights": params.weights_file,
    "input_size": params.number(int, 32, 224),
    "trainable_layers": params.number(int, 0),
    "dropout": params.number(float, 0, 1, hi_open=True),
}


def section(path="params.yaml", name="finetune_mobilenet"):
    """The model's params section, validated against SCHEMA."""
    values = params.load([name], path)[name]
    params.validate(values, SCHEMA, name, path)
    return values


def build_mobilenet(weights="imagenet", input_size=32, trainable_layers=20, dropout=0.2,
                    num_classes=NUM_CLASSES):
    """MobileNetV2 (no top) with a GAP-Dropout-Dense head; only its last `trainable_layers` train.

    `weights` is "imagenet" (Keras' cached download), None, or the path of a weights file.
    Frozen layers have trainable=False, which in Keras 3 also keeps a frozen BatchNormalization
    in inference mode: its ImageNet statistics are not overwritten by CIFAR-10 batches, the
    pitfall the Keras transfer-learning guide warns about. The unfrozen BN layers adapt.
    """
    size = (input_size, input_size, 3)
    base = keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=size)
    for layer in base.layers[: max(0, len(base.layers) - trainable_layers)]:
        layer.trainable = False

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    if input_size != INPUT_SHAPE[0]:
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="upscale")(x)
    # MobileNetV2's own preprocessing: 0-255 -> [-1, 1] (keras.applications.mobilenet_v2.preprocess_input).
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_minus1_1")(x)
    x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def mobilenet_from(section, weights=None):
    """build_mobilenet from its params section (finetune_mobilenet) and the weights file that
    fetch_weights placed (`weights`: a path, or None for random initialisation)."""
    return build_mobilenet(weights, section["input_size"], section["trainable_layers"], section["dropout"])
