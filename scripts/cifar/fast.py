"""The fast model: an airbench94-style network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds
on a single GPU", arXiv 2404.00498), written in Keras from the paper's description.

    raw 0-255 RGB -> /255 -> per-channel standardisation (the training set's mean and std)
    -> 2x2 convolution, frozen, initialised to whiten 2x2 patches (eigenvectors of the training
       images' patch covariance, each with its negative: 2 x 12 = 24 channels), GELU
    -> 3 conv groups (widths 64, 256, 256): conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU
       (each conv's first in_channels filters start as the identity, airbench's Dirac init)
    -> max-pool 3 -> dense (no bias) -> x 1/9 (logit scale) -> test-time augmentation -> softmax

BatchNormalization has no learned scale (as airbench: its weight is frozen at 1) and a fast
moving average. Differences from airbench94, chosen to keep every artifact exportable and the
code small: GELU is the tanh approximation (TF.js cannot run the exact one's Erfc), the
whitening convolution has no bias (airbench trains one for 3 epochs), and the
network trains on the 40,000-image split the pipeline shares. The training recipe (SGD with
Nesterov momentum, label smoothing, a warm-up/decay schedule, a higher learning rate for BN
biases, lookahead) is in cifar.training, its settings in params.yaml `train_fast`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from cifar.data import IMAGE_SHAPE, NUM_CLASSES
from cifar.layers import TestTimeAugmentation, gelu_tanh


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


def conv_group(x, width, momentum, name):
    bn = dict(momentum=momentum, epsilon=1e-5, scale=False)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.BatchNormalization(name=f"{name}_bn1", **bn)(x)
    x = layers.Activation(gelu_tanh, name=f"{name}_gelu1")(x)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2", **bn)(x)
    return layers.Activation(gelu_tanh, name=f"{name}_gelu2")(x)


def build(section, images):
    """The fast model from its params section and the training images (uint8 NHWC), which set the
    standardisation and the whitening filters."""
    sample = images[: section["whiten_images"]].astype(np.float32) / 255.0
    mean, std = sample.mean(axis=(0, 1, 2)), sample.std(axis=(0, 1, 2))
    patch = section["whiten_patch"]
    kernel = whitening_filters((sample - mean) / std, patch)

    net_in = keras.Input(IMAGE_SHAPE, name="standardised")
    whiten = layers.Conv2D(kernel.shape[-1], patch, padding="valid", use_bias=False, trainable=False, name="whiten")
    x = layers.Activation(gelu_tanh, name="whiten_gelu")(whiten(net_in))
    for i, width in enumerate(section["widths"], start=1):
        x = conv_group(x, width, section["batchnorm_momentum"], f"group{i}")
    x = layers.GlobalMaxPooling2D(name="pool")(x)  # airbench's max-pool 3 over the final 3x3
    x = layers.Dense(NUM_CLASSES, use_bias=False, name="logits")(x)
    logits = layers.Rescaling(section["logit_scale"], name="logit_scale")(x)
    net = keras.Model(net_in, logits, name="fast_net")
    whiten.set_weights([kernel])
    for layer in net.layers:
        if layer.name.startswith("group") and isinstance(layer, layers.Conv2D):
            dirac_init(layer)

    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(inputs)
    x = layers.Normalization(mean=mean.tolist(), variance=(std ** 2).tolist(), name="standardise")(x)
    x = TestTimeAugmentation(net, level=section["tta"], name="tta")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fast")
