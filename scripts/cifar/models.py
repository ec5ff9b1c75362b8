"""Model builders. Each returns an uncompiled Keras model that takes raw 0-255 RGB (32, 32, 3)
and scales it itself, so every exported format is called the same way."""

from __future__ import annotations

import keras
from keras import layers

from cifar.data import IMAGE_SHAPE as INPUT_SHAPE
from cifar.data import NUM_CLASSES



def build_cnn(filters=(64, 128, 256), kernel_size=3, block_dropout=(0.25, 0.25),
              dense_units=512, dense_dropout=0.5, num_classes=NUM_CLASSES):
    """The seed's CNN: two Conv-BN-MaxPool-Dropout blocks, Conv-BN-GAP, Dense, Dropout, softmax."""
    f1, f2, f3 = filters
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            layers.Rescaling(1.0 / 255, name="scale_0_1"),
            layers.Conv2D(f1, kernel_size, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Dropout(block_dropout[0]),
            layers.Conv2D(f2, kernel_size, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Dropout(block_dropout[1]),
            layers.Conv2D(f3, kernel_size, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(dense_units, activation="relu"),
            layers.Dropout(dense_dropout),
            layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="cnn",
    )


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


def cnn_from(section):
    """build_cnn from its params section (train_cnn)."""
    return build_cnn(section["filters"], section["kernel_size"], section["block_dropout"],
                     section["dense_units"], section["dense_dropout"])


def mobilenet_from(section, weights=None):
    """build_mobilenet from its params section (finetune_mobilenet) and the weights file that
    fetch_weights placed (`weights`: a path, or None for random initialisation)."""
    return build_mobilenet(weights, section["input_size"], section["trainable_layers"], section["dropout"])


def build(builder, section, section_name, **inputs):
    """The uncompiled model of a registry entry. `builder` is "module:function" (the registry's
    `builder`, e.g. cifar.models:cnn_from): function(section, **inputs) returns the model; inputs
    may hold `images`, the training images, passed only to a builder that takes them. A new
    model's builder can live in a module of its own, so only its stage depends on it. A missing
    key of its section is a ParamsError."""
    import importlib

    from cifar.params import ParamsError

    module_name, _, function = builder.partition(":")
    try:
        make = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise ParamsError(f"builder '{builder}' not found ({err}); expected module:function, "
                          "e.g. cifar.models:cnn_from") from None
    import inspect

    if "images" in inputs and "images" not in inspect.signature(make).parameters:
        inputs = {k: v for k, v in inputs.items() if k != "images"}  # a builder that needs no data
    try:
        return make(section, **inputs)
    except KeyError as err:
        raise ParamsError(f"params.yaml: section '{section_name}' lacks the key {err.args[0]!r}, "
                          f"which the builder {builder} needs") from None
