"""MobileNetV2 with a new head (registry entry `mobilenet`): the ImageNet backbone fine-tuned with
the seed's settings in phases (a new head on the frozen backbone, then the backbone's top at a
lower rate, each from the best model of the one before), or the seed's one phase."""

from __future__ import annotations

from typing import Annotated

import keras
from keras import layers
from pydantic import AfterValidator

from cifar import params
from cifar.data import IMAGE_SHAPE, NUM_CLASSES  # the defaults: CIFAR-10's
from cifar.models import Phase, Plan

# The ImageNet backbone `fetch_weights.mobilenet: imagenet` names (the fetch_weights stage downloads it),
# and the name it is stored under.
IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
                "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
BACKBONE = "mobilenet_v2_no_top"

# The `mobilenet` section, checked here rather than in cifar.params, so that changing it
# touches this model's stage only.
class PhaseSettings(params.Section):
    name: params.rule(lambda v: isinstance(v, str) and v.isidentifier() and v == v.lower(), "a lowercase name")
    epochs: params.number(int, 1, 10_000)
    learning_rate: params.number(float, 0, 1, lo_open=True)
    trainable_layers: params.number(int, 0)


def _distinct_names(phases):
    if len({phase.name for phase in phases}) != len(phases):
        raise ValueError("phase names repeat")
    return phases


class SCHEMA(params.Section):  # params.yaml `mobilenet`
    input_size: params.number(int, 32, 224)
    trainable_layers: params.or_null(params.number(int, 0))
    dropout: params.number(float, 0, 1, hi_open=True)
    # [] = the seed's one phase
    phases: Annotated[list[PhaseSettings], AfterValidator(_distinct_names), params.Allowed(
        "[] or a list of {name, epochs, learning_rate, trainable_layers} mappings with distinct lowercase names, "
        "epochs >= 1, 0 < learning_rate <= 1, trainable_layers >= 0")]
    train_batchnorm: params.or_null(params.boolean)
    augment: params.Augment
    train: params.Train


# Which keys each recipe reads: the seed's one phase (phases: []) reads trainable_layers; a recipe
# in phases has each phase's own trainable_layers, and reads train_batchnorm.
ONE_PHASE_ONLY = ("trainable_layers",)
PHASES_ONLY = ("train_batchnorm",)


def validate(values, where="mobilenet", path="params.yaml"):
    """SCHEMA, and exactly the keys its recipe reads: an ignored key must be null."""
    params.validate(values, SCHEMA, where, path)
    phased = bool(values["phases"])
    recipe = "the recipe in phases" if phased else "the seed's one phase (phases: [])"
    ignored, needed = (ONE_PHASE_ONLY, PHASES_ONLY) if phased else (PHASES_ONLY, ONE_PHASE_ONLY)
    for key in ignored:
        if values[key] is not None:
            hint = "each phase sets its own" if key == "trainable_layers" else "it applies to the phases only"
            raise params.ParamsError(f"{path}: {where}.{key} = {values[key]!r} is ignored by {recipe} ({hint}); "
                                     f"set it to null, or change {where}.phases")
    for key in needed:
        if values[key] is None:
            raise params.ParamsError(f"{path}: {where}.{key} is null, but {recipe} needs it; give it a value")


def build_mobilenet(weights, input_size, trainable_layers, dropout, train_batchnorm,
                    num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE):
    """MobileNetV2 (no top, `weights`: "imagenet", None or a file) with a GAP-Dropout-Dense head,
    only its last `trainable_layers` training. A frozen BatchNormalization stays in inference mode
    (Keras 3), as the transfer-learning guide advises; `train_batchnorm` False freezes all of them.
    Images are resized to `input_size` inside."""
    size = (input_size, input_size, 3)
    base = keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=size)
    first_trained = max(0, len(base.layers) - trainable_layers)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= first_trained and (train_batchnorm or not isinstance(layer, layers.BatchNormalization))

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if input_size != input_shape[0]:
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="upscale")(x)
    # MobileNetV2's own preprocessing: 0-255 -> [-1, 1] (keras.applications.mobilenet_v2.preprocess_input).
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_minus1_1")(x)
    x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    # float32 in any precision: the softmax and the loss stay float32 (mixed precision).
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def build(section, images, classes, weights=None):
    """The model of the section's first phase (or the seed's one phase)."""
    first = section["phases"][0] if section["phases"] else {"trainable_layers": section["trainable_layers"]}
    return phase_model(section, weights, first, None, images.shape[1:], classes)


def phase_model(section, weights, phase, previous, input_shape, classes):
    """The model one phase trains, from the phase before's best model, else from `weights`."""
    batchnorm = section["train_batchnorm"] if section["phases"] else True
    model = build_mobilenet(weights if previous is None else None, section["input_size"], phase["trainable_layers"],
                            section["dropout"], batchnorm, classes, input_shape)
    if previous is not None:
        model.load_weights(previous)  # matched by layer, whatever is frozen now
    return model


def phases(section, weights):
    """The recipe's phases, each with `train` at its own epochs and rate, or the seed's one phase."""
    if not section["phases"]:
        return [Phase(None, lambda arrays, previous: build(section, arrays["x_train"], len(arrays["class_names"]), weights),
                      section["train"])]
    return [
        Phase(phase["name"],
              lambda arrays, previous, phase=phase: phase_model(section, weights, phase, previous,
                                                                arrays["x_train"].shape[1:], len(arrays["class_names"])),
              {**section["train"], "epochs": phase["epochs"], "learning_rate": phase["learning_rate"]})
        for phase in section["phases"]
    ]


def plan(section, weights=None):
    return Plan(phases(section, weights), section["augment"])
