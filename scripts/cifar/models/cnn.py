"""The seed's CNN (registry entry `cnn`, stage `train@cnn`), trained with the seed's settings
(`shared.train`, `shared.augment`) and recipe (cifar.training.recipe), as the seed wrote them."""

from __future__ import annotations

import keras
from keras import layers

from cifar import params
from cifar.data import IMAGE_SHAPE, NUM_CLASSES

class SCHEMA(params.Section):  # params.yaml `cnn`: the architecture
    filters: params.int_list(3, 1, 4096)
    kernel_size: params.number(int, 1, 15)
    block_dropout: params.float_list(2, 0, 1, hi_open=True)
    dense_units: params.number(int, 1, 65_536)
    dense_dropout: params.number(float, 0, 1, hi_open=True)


def build_cnn(filters=(64, 128, 256), kernel_size=3, block_dropout=(0.25, 0.25),
              dense_units=512, dense_dropout=0.5, num_classes=NUM_CLASSES):
    """The seed's CNN: two Conv-BN-MaxPool-Dropout blocks, Conv-BN-GAP, Dense, Dropout, softmax."""
    f1, f2, f3 = filters
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE, name="image"),
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
            # float32 in any precision: the softmax and the loss stay float32 (mixed precision).
            layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32"),
        ],
        name="cnn",
    )


def build(section):
    """build_cnn from its params section (cnn)."""
    return build_cnn(section["filters"], section["kernel_size"], section["block_dropout"],
                     section["dense_units"], section["dense_dropout"])
