"""The fast model (registry entry `fast`, stage `train@fast`; `fast_robust` too): an airbench94-style network (Keller
Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498), written in Keras
from the paper's description, with its recipe, its optimizer and its schedule.

    raw 0-255 RGB -> /255 -> per-channel standardisation (the training set's mean and std)
    -> 2x2 convolution, frozen, initialised to whiten 2x2 patches (eigenvectors of the training
       images' patch covariance, each with its negative: 2 x 12 = 24 channels), GELU
    -> 3 conv groups (widths 64, 256, 256): conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU
       (each conv's first in_channels filters start as the identity, airbench's Dirac init)
    -> max-pool 3 -> dense (no bias) -> x 1/9 (logit scale) -> softmax

BatchNormalization has no learned scale (as airbench: its weight is frozen at 1) and a fast
moving average. Differences from airbench94, chosen to keep every artifact exportable and the
code small: GELU is the tanh approximation (TF.js cannot run the exact one's Erfc), and the
network trains on the 40,000-image split the pipeline shares. The whitening convolution's bias
is airbench's option `train.whiten_bias_epochs`: 0 builds none; N > 0 builds one that trains for
the first N epochs, then stops (airbench trains it for 3). Test-time augmentation is an inference choice
(`models.fast.tta`, cifar.tta), applied to the trained model.

The recipe (`recipe`) is airbench's: SGD with Nesterov momentum on a warm-up/decay schedule per
step, label smoothing, a higher learning rate for BN biases, coupled L2 weight decay and
lookahead. params.yaml states its learning rate and weight decay in airbench's own units (per
1,024 images, for the loss summed over the batch); `per_step` converts them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cifar import params
from cifar.data import NUM_CLASSES  # the default: CIFAR-10's
from cifar.models import Phase, Plan, Recipe, to_side
from cifar.training.airbench import BiasScaledSGD, WarmupDecay

class AugMix(params.Section):  # `augment.augmix`: AugMix's settings (cifar.augmix), for the augmix policy only
    severity: params.number(int, 1, 10)
    width: params.number(int, 1, 10)
    depth: params.number(int, 0, 10)  # 0: 1 to 3 operations per chain
    alpha: params.number(float, 0, 100, lo_open=True)


class Muon(params.Section):  # `train.muon`: Muon's settings for the convolution filters (BiasScaledSGD)
    learning_rate: params.number(float, 0, 10, lo_open=True)
    momentum: params.number(float, 0, 1, hi_open=True)
    newton_schulz_steps: params.number(int, 1, 10)


class Augment(params.Section):
    policy: params.choice("flip_translate", "augmix")
    translate_px: params.number(int, 0, 8)
    augmix: params.or_null(AugMix)


class Train(params.Section):  # replaces shared.train for this model
    optimizer: params.choice("sgd_nesterov")
    epochs: params.number(int, 1, 10_000)
    batch_size: params.number(int, 1, 65_536)
    learning_rate: params.number(float, 0, 1000, lo_open=True)
    lr_start_end: params.float_list(2, 0, 1)
    warmup_fraction: params.number(float, 0, 1)
    momentum: params.number(float, 0, 1, hi_open=True)
    weight_decay: params.number(float, 0, 1)
    bias_lr_scale: params.number(float, 0, 1000, lo_open=True)
    label_smoothing: params.number(float, 0, 1, hi_open=True)
    lookahead_every: params.number(int, 1, 10_000)
    lookahead_decay: params.number(float, 0, 1)
    whiten_bias_epochs: params.number(int, 0, 10_000)
    muon: params.or_null(Muon)  # null: SGD for the filters too
    validate_every: params.number(int, 1, 10_000)
    drop_last: params.boolean
    class_weight: params.class_weight
    distribute: params.distribute
    steps_per_execution: params.number(int, 1, 10_000)
    jit_compile: params.auto_or_boolean
    precision: params.precision


class SCHEMA(params.Section):  # params.yaml `fast`
    side: params.number(int, 8, 512)
    widths: params.int_list(3, 1, 4096)
    whiten_patch: params.number(int, 1, 4)
    whiten_images: params.number(int, 1, 50_000)
    batchnorm_momentum: params.number(float, 0, 1, hi_open=True)
    batchnorm: params.choice("keras", "fused")
    logit_scale: params.number(float, 0, 10, lo_open=True)
    augment: Augment
    train: Train
    float32: params.rule(lambda v: v is None or isinstance(v, dict),
                         "null, or settings of this section laid over it where training resolves to float32 "
                         "(e.g. {train: {epochs: 10}})")


def validate(values, where="fast", path="params.yaml"):
    """Check the section against SCHEMA (and with its `float32` settings laid over it), and that
    `augment.augmix` is set exactly when the policy is augmix (a setting the policy ignores must be
    null, so changing it cannot retrain for nothing)."""
    params.validate(values, SCHEMA, where, path)
    if values["float32"]:
        params.validate({**params.merged(values, values["float32"]), "float32": None}, SCHEMA,
                        f"{where} (with {where}.float32 laid over it)", path)
    augment = values["augment"]
    if (augment["policy"] == "augmix") != (augment["augmix"] is not None):
        need = "give it AugMix's settings" if augment["policy"] == "augmix" else "set it to null"
        raise params.ParamsError(f"{path}: {where}.augment.augmix = {augment['augmix']!r} with policy "
                                 f"{augment['policy']!r}; {need}")


SOURCE_IMAGES = 1024  # airbench's unit: its learning rate and weight decay are per 1,024 images


def per_step(learning_rate, weight_decay, momentum, batch_size):
    """(learning rate, weight decay) per step for the batch-mean loss, from airbench's values per
    1,024 images for the summed loss. airbench divides both by 1024 x (1 + 1 / (1 - momentum)),
    the size of a Nesterov step relative to one image's gradient, and multiplies the weight decay
    by the batch size; the mean loss's gradient is 1/batch of the summed one, so its learning
    rate is batch times larger. The weight decay is per step at the peak rate (the schedule
    scales it, as airbench's)."""
    kilostep = SOURCE_IMAGES * (1 + 1 / (1 - momentum))
    return learning_rate * batch_size / kilostep, weight_decay * batch_size / kilostep


def whitening_filters(images, patch, eps=5e-4):
    """(patch, patch, 3, 2 * patch * patch * 3) Conv2D kernel that whitens `patch`x`patch` patches.

    `images` are standardised float32 NHWC. Each eigenvector v of the patches' covariance,
    scaled by 1/sqrt(eigenvalue + eps), and its negative, is one output channel.
    """
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
    """airbench's initialisation: the first `in_channels` filters of a 3x3 convolution pass their
    input channel through unchanged (a Dirac delta at the centre); the others keep their random
    start. So a group's second convolution (as wide as its input) starts as the identity."""
    kernel = conv.kernel.numpy()
    k, _, c_in, c_out = kernel.shape
    n = min(c_in, c_out)
    kernel[..., :n] = 0.0
    kernel[k // 2, k // 2, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)


@keras.saving.register_keras_serializable(package="cifar.models.fast")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization (the same variables, settings and inference), trained through
    TensorFlow's fused kernel. Keras' own casts a bfloat16 input to float32 and normalises it in
    separate elementwise ops; the fused kernel (oneDNN's on a CPU) takes the bfloat16 tensor,
    keeps its statistics in float32 and does it in one pass, forward and backward. Outside
    training (and for shapes it does not cover) it is Keras' layer, so every export sees the
    plain arithmetic. The moving variance takes the batch's unbiased variance (TF's kernel, as
    PyTorch's BatchNorm2d, which airbench uses; Keras' takes the biased one): n/(n-1) apart,
    at most 1.0001 in training here (1,024 images of 3x3 maps in the last group)."""

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
    """The fast model from its params section and the training images (uint8 NHWC), which set the
    input shape, the standardisation and the whitening filters, for `classes` classes. It works at
    `side` px: images prepared at another side are resized to it inside (cifar.models.to_side),
    the whitening sample too."""
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
    """GELU in its tanh approximation. The exact one lowers to Erfc, which TF.js cannot run; the
    two differ by less than 1e-3 everywhere."""
    return keras.activations.gelu(x, approximate=True)


class StartLookahead(keras.callbacks.Callback):
    """Sets the optimizer's lookahead slow weights to the model's at the first epoch's start: after
    every on_train_begin, so after BackupAndRestore has restored a resumed run's weights (Keras
    calls on_train_begin in list order), and before the first step changes BatchNormalization's
    moving statistics. An epoch hook only: Keras still dispatches the steps without waiting."""

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
    muon = train_cfg.get("muon")  # Muon's learning rate has the schedule's shape, its own peak
    muon_settings = {"muon_scale": muon["learning_rate"] / peak, "muon_momentum": muon["momentum"],
                     "newton_schulz_steps": muon["newton_schulz_steps"]} if muon else {}
    optimizer = BiasScaledSGD(learning_rate=schedule, momentum=train_cfg["momentum"], nesterov=True,
                              bias_scale=train_cfg["bias_lr_scale"], l2=decay / peak,
                              lookahead_every=train_cfg["lookahead_every"],
                              lookahead_decay=train_cfg["lookahead_decay"], total_steps=total,
                              steps_per_epoch=steps_per_epoch,
                              whiten_bias_steps=train_cfg.get("whiten_bias_epochs", 0) * steps_per_epoch, **muon_settings)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"])

    def prepare(model):  # lookahead averages every float weight, not only the trainable ones
        optimizer.watch(model.weights)
        optimizer.start_lookahead()  # a fit without the callback (bench) starts from these weights

    return Recipe(optimizer, loss, [StartLookahead()], [], prepare)


def for_precision(section):
    """(the settings a training uses, which recipe): where its precision resolves to float32 (a CPU
    without bfloat16, or asked), the `float32` settings laid over the section ("float32": the
    float32 recipe, chosen on its own frontier, studies/float32/); else the section ("default")."""
    from cifar.training import precision

    if section.get("float32") and precision.resolve(section["train"]["precision"])[0] == "float32":
        return params.merged(section, section["float32"]), "float32"
    return section, "default"


def plan(section, shared, weights=None):
    """One phase of `build` with its own settings (`train`) and augmentation (`augment`), for the
    precision training resolves to (for_precision)."""
    section, variant = for_precision(section)
    return Plan([Phase(None, lambda arrays, previous: build(section, arrays["x_train"], len(arrays["class_names"])), section["train"])],
                section["augment"], recipe, variant)
