"""The fast model (registry entries `fast`, `fast_robust`): an airbench94-style network (Keller
Jordan, arXiv 2404.00498) in Keras, with its recipe, optimizer and schedule.

    raw 0-255 RGB -> /255 -> standardisation (the training set's mean and std)
    -> 2x2 convolution, frozen, whitening 2x2 patches (each eigenvector and its negative), GELU
    -> 3 groups (widths 64, 256, 256): conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU
    -> max-pool -> dense (no bias) -> x logit scale -> softmax

As airbench: BN without a learned scale and a fast moving average, Dirac-initialised convolutions,
the whitening bias trained for `train.whiten_bias_epochs`. Unlike it: GELU's tanh approximation
(TF.js cannot run Erfc), the pipeline's 40,000-image split. The recipe is airbench's (Nesterov
SGD, warm-up/decay per step, label smoothing, scaled bias rate, coupled L2, lookahead, optionally
Muon), its rate and decay in airbench's units (per 1,024 images, summed loss): `per_step`."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cifar import params
from cifar.data import NUM_CLASSES  # the default: CIFAR-10's
from cifar.models import Phase, Plan, Recipe, to_side
from cifar.training.airbench import BiasScaledSGD, WarmupDecay

NOT_AIRBENCH = params.unused("the seed's schedule: airbench's recipe does not use it")


class Muon(params.Section):  # `train.muon`: Muon's settings for the convolution filters (BiasScaledSGD)
    learning_rate: params.number(float, 0, 10, lo_open=True)
    momentum: params.number(float, 0, 1, hi_open=True)
    newton_schulz_steps: params.number(int, 1, 10)


class Train(params.Train):  # shared.train's keys, and airbench's
    optimizer: params.choice("sgd_nesterov")
    learning_rate: params.number(float, 0, 1000, lo_open=True)
    lr_start_end: params.float_list(2, 0, 1)
    warmup_fraction: params.number(float, 0, 1)
    momentum: params.number(float, 0, 1, hi_open=True)
    weight_decay: params.number(float, 0, 1)
    bias_lr_scale: params.number(float, 0, 1000, lo_open=True)
    lookahead_every: params.number(int, 1, 10_000)
    lookahead_decay: params.number(float, 0, 1)
    whiten_bias_epochs: params.number(int, 0, 10_000)
    muon: params.or_null(Muon)  # null: SGD for the filters too
    lr_decay: NOT_AIRBENCH
    early_stopping_patience: NOT_AIRBENCH
    plateau_factor: NOT_AIRBENCH
    plateau_patience: NOT_AIRBENCH


class SCHEMA(params.Section):  # params.yaml `fast`
    side: params.number(int, 8, 512)
    widths: params.int_list(3, 1, 4096)
    whiten_patch: params.number(int, 1, 4)
    whiten_images: params.number(int, 1, 50_000)
    batchnorm_momentum: params.number(float, 0, 1, hi_open=True)
    batchnorm: params.choice("keras", "fused")
    logit_scale: params.number(float, 0, 10, lo_open=True)
    augment: params.Augment
    train: Train
    float32: params.rule(lambda v: v is None or isinstance(v, dict),
                         "null, or settings of this section laid over it where training resolves to float32 "
                         "(e.g. {train: {epochs: 10}})")


def validate(values, where="fast", path="params.yaml"):
    """SCHEMA, also with `float32` laid over."""
    params.validate(values, SCHEMA, where, path)
    if values["float32"]:
        params.validate({**params.merged(values, values["float32"]), "float32": None}, SCHEMA,
                        f"{where} (with {where}.float32 laid over it)", path)


SOURCE_IMAGES = 1024  # airbench's unit: its learning rate and weight decay are per 1,024 images


def per_step(learning_rate, weight_decay, momentum, batch_size):
    """(learning rate, weight decay) per step for the batch-mean loss, from airbench's values per
    1,024 images for the summed loss: both divided by 1024 x (1 + 1 / (1 - momentum)) and multiplied
    by the batch size (the decay at the peak rate; the schedule scales it, as airbench's)."""
    kilostep = SOURCE_IMAGES * (1 + 1 / (1 - momentum))
    return learning_rate * batch_size / kilostep, weight_decay * batch_size / kilostep


def whitening_filters(images, patch, eps=5e-4):
    """(patch, patch, 3, 2 * patch^2 * 3) kernel whitening the patches of standardised `images`: each
    eigenvector of their covariance over sqrt(eigenvalue + eps), and its negative."""
    n, h, w, c = images.shape
    windows = np.lib.stride_tricks.sliding_window_view(images, (patch, patch), axis=(1, 2))
    # (n, h-p+1, w-p+1, c, p, p) -> (rows, p*p*c) in the kernel's (p, p, c) order
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, patch * patch * c).astype(np.float64)
    patches -= patches.mean(axis=0)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = (eigenvectors / np.sqrt(eigenvalues + eps)).T  # one whitening direction per row
    filters = np.concatenate([filters, -filters]).reshape(-1, patch, patch, c)
    return filters.transpose(1, 2, 3, 0).astype(np.float32)


def dirac_init(conv):
    """airbench's init: a 3x3 convolution's first in_channels filters pass their channel through."""
    kernel = conv.kernel.numpy()
    k, _, c_in, c_out = kernel.shape
    n = min(c_in, c_out)
    kernel[..., :n] = 0.0
    kernel[k // 2, k // 2, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)


@keras.saving.register_keras_serializable(package="cifar.models.fast")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization trained through TensorFlow's fused kernel, which takes bfloat16 in
    one pass (Keras' casts to float32 and normalises in separate ops). Outside training it is
    Keras' layer, so exports see plain arithmetic. The moving variance takes the batch's unbiased
    variance (TF's, and PyTorch's, which airbench uses): at most 1.0001 from Keras' here."""

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        if not (training and self.trainable) or mask is not None or len(inputs.shape) != 4 \
                or self.axis not in (-1, 3) or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels], tf.float32)
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels], tf.float32)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


BATCHNORM = {"keras": layers.BatchNormalization, "fused": FusedBatchNormalization}


def conv_group(x, width, momentum, name, batchnorm="keras"):
    bn = dict(momentum=momentum, epsilon=1e-5, scale=False)
    BatchNormalization = BATCHNORM[batchnorm]  # noqa: N806 (a layer class)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = BatchNormalization(name=f"{name}_bn1", **bn)(x)
    x = layers.Activation(gelu_tanh, name=f"{name}_gelu1")(x)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = BatchNormalization(name=f"{name}_bn2", **bn)(x)
    return layers.Activation(gelu_tanh, name=f"{name}_gelu2")(x)


def build(section, images, classes=NUM_CLASSES):
    """The fast model for `classes` classes from its section and the uint8 training images (input
    shape, standardisation, whitening); images at another side are resized to `side` inside."""
    resize = to_side(images.shape[1], section["side"])
    sample = images[: section["whiten_images"]].astype(np.float32)
    sample = (np.asarray(resize(sample)) if resize else sample) / 255.0
    mean, std = sample.mean(axis=(0, 1, 2)), sample.std(axis=(0, 1, 2))
    patch = section["whiten_patch"]
    kernel = whitening_filters((sample - mean) / std, patch)

    net_in = keras.Input(sample.shape[1:], name="standardised")
    bias = section["train"].get("whiten_bias_epochs", 0) > 0  # its optimizer stops it after those epochs
    whiten = layers.Conv2D(kernel.shape[-1], patch, padding="valid", use_bias=bias, trainable=bias, name="whiten")
    x = layers.Activation(gelu_tanh, name="whiten_gelu")(whiten(net_in))
    for i, width in enumerate(section["widths"], start=1):
        x = conv_group(x, width, section["batchnorm_momentum"], f"group{i}", section["batchnorm"])
    x = layers.GlobalMaxPooling2D(name="pool")(x)  # airbench's max-pool 3 over the final 3x3
    x = layers.Dense(classes, use_bias=False, name="logits")(x)
    logits = layers.Rescaling(section["logit_scale"], name="logit_scale")(x)
    net = keras.Model(net_in, logits, name="fast_net")
    whiten.set_weights([kernel, np.zeros(kernel.shape[-1], np.float32)] if bias else [kernel])
    whiten.kernel.trainable = False  # the filters stay the whitening ones; only the bias may train
    for layer in net.layers:
        if layer.name.startswith("group") and isinstance(layer, layers.Conv2D):
            dirac_init(layer)

    inputs = keras.Input(images.shape[1:], name="image")
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(resize(inputs) if resize else inputs)
    x = layers.Normalization(mean=mean.tolist(), variance=(std ** 2).tolist(), name="standardise")(x)
    # float32 in any precision: the softmax and the loss stay float32 (mixed precision).
    outputs = layers.Activation("softmax", name="probabilities", dtype="float32")(net(x))
    return keras.Model(inputs, outputs, name="fast")


@keras.saving.register_keras_serializable(package="cifar.models.fast")
def gelu_tanh(x):
    """GELU, tanh approximation: the exact one lowers to Erfc, which TF.js cannot run (< 1e-3 apart)."""
    return keras.activations.gelu(x, approximate=True)


class StartLookahead(keras.callbacks.Callback):
    """Sets the lookahead slow weights at the first epoch's start: after BackupAndRestore has restored
    a resumed run (on_train_begin runs in list order), before the first step."""

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            optimizer = self.model.optimizer  # under mixed_float16, Keras' LossScaleOptimizer wraps ours
            getattr(optimizer, "inner_optimizer", optimizer).start_lookahead()


def recipe(train_cfg, steps_per_epoch):
    """airbench's recipe for `train_cfg` (fast.train, in airbench's units)."""
    total = train_cfg["epochs"] * steps_per_epoch
    start, end = train_cfg["lr_start_end"]
    peak, decay = per_step(train_cfg["learning_rate"], train_cfg["weight_decay"], train_cfg["momentum"],
                           train_cfg["batch_size"])
    schedule = WarmupDecay(peak, total, round(train_cfg["warmup_fraction"] * total), start, end)
    muon = train_cfg["muon"]  # Muon's learning rate has the schedule's shape, its own peak
    muon_settings = {"muon_scale": muon["learning_rate"] / peak, "muon_momentum": muon["momentum"],
                     "newton_schulz_steps": muon["newton_schulz_steps"]} if muon else {}
    optimizer = BiasScaledSGD(learning_rate=schedule, momentum=train_cfg["momentum"], nesterov=True,
                              bias_scale=train_cfg["bias_lr_scale"], l2=decay / peak,
                              lookahead_every=train_cfg["lookahead_every"],
                              lookahead_decay=train_cfg["lookahead_decay"], total_steps=total,
                              steps_per_epoch=steps_per_epoch,
                              whiten_bias_steps=train_cfg["whiten_bias_epochs"] * steps_per_epoch, **muon_settings)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"])

    def prepare(model):  # lookahead averages every float weight, not only the trainable ones
        optimizer.watch(model.weights)
        optimizer.start_lookahead()  # a fit without the callback (bench) starts from these weights

    return Recipe(optimizer, loss, [StartLookahead()], [], prepare)


def for_precision(section):
    """(settings, recipe name): with `float32` laid over where training resolves to float32 ("float32",
    studies/float32/), else the section ("default")."""
    from cifar.training import precision

    if section["float32"] and precision.resolve(section["train"]["precision"])[0] == "float32":
        return params.merged(section, section["float32"]), "float32"
    return section, "default"


def plan(section, weights=None):
    """One phase of `build` with its own `train` and `augment`, for the resolved precision."""
    section, variant = for_precision(section)
    return Plan([Phase(None, lambda arrays, previous: build(section, arrays["x_train"], len(arrays["class_names"])), section["train"])],
                section["augment"], recipe, variant)
