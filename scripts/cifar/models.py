"""Model builders and the registry's `build`. Each builder returns an uncompiled Keras model that
takes raw 0-255 RGB (32, 32, 3) and scales it itself, so every exported format is called the same
way. The seed CNN is here; other models have modules of their own (cifar.fast, cifar.mobilenet)."""

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


def cnn_from(section):
    """build_cnn from its params section (train_cnn)."""
    return build_cnn(section["filters"], section["kernel_size"], section["block_dropout"],
                     section["dense_units"], section["dense_dropout"])


def build(builder, section, section_name, **inputs):
    """The uncompiled model of a registry entry. `builder` is "module:function" (the registry's
    `builder`, e.g. cifar.models:cnn_from): function(section, **inputs) returns the model; inputs
    may hold `images`, the training images, passed only to a builder that takes them. A new
    model's builder can live in a module of its own, so only its stage depends on it. A missing
    key of its section is a ParamsError."""
    import importlib

    from cifar.params import ParamsError

    from cifar.params import BUILDER

    if not BUILDER.fullmatch(builder):
        raise ParamsError(f"builder '{builder}' is not allowed: a builder is cifar.MODULE:FUNCTION, a function of "
                          "the project's package (scripts/cifar/), e.g. cifar.models:cnn_from")
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
