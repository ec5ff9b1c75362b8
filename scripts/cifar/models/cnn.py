"""The seed's CNN (registry entry `cnn`, stage `train@cnn`), trained with the seed's settings
(`shared.train`, `shared.augment`, under `cnn.train`, `cnn.augment`) and recipe
(cifar.training.recipe), as the seed wrote them."""

from __future__ import annotations

import keras
from keras import layers

from cifar import params
from cifar.data import IMAGE_SHAPE, NUM_CLASSES  # the defaults: CIFAR-10's
from cifar.models import to_side

class SCHEMA(params.Section):  # params.yaml `cnn`: the architecture, over shared's train: and augment:
    augment: params.Augment
    train: params.Train
    side: params.number(int, 8, 512)
    filters: params.int_list(3, 1, 4096)
    convs_per_block: params.number(int, 1, 4)
    kernel_size: params.number(int, 1, 15)
    block_dropout: params.float_list(2, 0, 1, hi_open=True)
    dense_units: params.number(int, 1, 65_536)
    dense_dropout: params.number(float, 0, 1, hi_open=True)


def build(section, images=None, classes=NUM_CLASSES):
    """The seed's CNN from its section: Conv-BN blocks with max-pooling and dropout, Conv-BN-GAP,
    Dense, Dropout, softmax, resized to `side` inside. `convs_per_block`: 1 reads the seed's text
    literally, 2 reads each block as two convolutions (studies/fidelity/ compares them)."""
    kernel_size, block_dropout, convs_per_block = section["kernel_size"], section["block_dropout"], section["convs_per_block"]

    def block(width):
        return [layer for _ in range(convs_per_block) for layer in (
            layers.Conv2D(width, kernel_size, padding="same", activation="relu"), layers.BatchNormalization())]

    f1, f2, f3 = section["filters"]
    shape = IMAGE_SHAPE if images is None else images.shape[1:]
    resize = to_side(shape[0], section["side"])
    return keras.Sequential(
        [
            keras.Input(shape, name="image"),
            *([resize] if resize else []),
            layers.Rescaling(1.0 / 255, name="scale_0_1"),
            *block(f1),
            layers.MaxPooling2D(),
            layers.Dropout(block_dropout[0]),
            *block(f2),
            layers.MaxPooling2D(),
            layers.Dropout(block_dropout[1]),
            *block(f3),
            layers.GlobalAveragePooling2D(),
            layers.Dense(section["dense_units"], activation="relu"),
            layers.Dropout(section["dense_dropout"]),
            # float32 in any precision: the softmax and the loss stay float32 (mixed precision).
            layers.Dense(classes, activation="softmax", name="probabilities", dtype="float32"),
        ],
        name="cnn",
    )

