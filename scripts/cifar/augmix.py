"""AugMix (Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
Uncertainty", ICLR 2020) for uint8 CIFAR batches, with NumPy and OpenCV.

Each image gets `width` chains of 1-3 (or `depth`) operations drawn from OPERATIONS at
`severity`; the chains are mixed with Dirichlet(alpha) weights, and the mix with the image with
a Beta(alpha, alpha) weight. The operations are AugMix's own set for corruption benchmarks:
its paper leaves out those that overlap ImageNet-C's corruptions (contrast, colour, brightness,
sharpness; noise, blur and JPEG were never among them), so that the corruptions a model is
measured on stay unseen in training. EXCLUDED names each left out and the corruption it overlaps.

Every draw comes from (seed, epoch, image index): an image's augmentation does not depend on the
batch it is in or on how a batch is split, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import cv2
import numpy as np


def _level(rng, severity, maxval):
    """AugMix's sample_level then float_parameter: U(0.1, severity) on its 0-10 scale, as a
    fraction of `maxval`."""
    return rng.uniform(0.1, severity) * maxval / 10


def _signed(rng, value):
    return value if rng.random() < 0.5 else -value


def _affine(image, matrix):
    """PIL's Image.transform(AFFINE): `matrix` maps output pixels to input pixels; bilinear, the
    outside filled with black, as AugMix's PIL operations."""
    side = image.shape[0]
    return cv2.warpAffine(image, np.float32(matrix), (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def autocontrast(image, rng, severity):
    low = image.min(axis=(0, 1), keepdims=True).astype(np.float32)
    high = image.max(axis=(0, 1), keepdims=True).astype(np.float32)
    span = np.where(high > low, high - low, 1.0)
    stretched = np.where(high > low, (image - low) * (255.0 / span), image)
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)


def equalize(image, rng, severity):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)], axis=-1)


def posterize(image, rng, severity):
    bits = 4 - int(_level(rng, severity, 4))
    return image & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(image, rng, severity):
    threshold = 256 - int(_level(rng, severity, 256))
    return np.where(image < threshold, image, 255 - image).astype(np.uint8)


def rotate(image, rng, severity):
    degrees = _signed(rng, int(_level(rng, severity, 30)))
    side = image.shape[0]
    matrix = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def shear_x(image, rng, severity):
    return _affine(image, [[1, _signed(rng, _level(rng, severity, 0.3)), 0], [0, 1, 0]])


def shear_y(image, rng, severity):
    return _affine(image, [[1, 0, 0], [_signed(rng, _level(rng, severity, 0.3)), 1, 0]])


def translate_x(image, rng, severity):
    return _affine(image, [[1, 0, _signed(rng, int(_level(rng, severity, image.shape[0] / 3)))], [0, 1, 0]])


def translate_y(image, rng, severity):
    return _affine(image, [[1, 0, 0], [0, 1, _signed(rng, int(_level(rng, severity, image.shape[0] / 3)))]])


OPERATIONS = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "solarize": solarize,
    "rotate": rotate, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x, "translate_y": translate_y,
}
# AugMix's operations that its paper leaves out for corruption benchmarks, and what each overlaps.
EXCLUDED = {"contrast": "contrast", "color": "saturate", "brightness": "brightness and darken",
            "sharpness": "the blurs"}


def augment_and_mix(image, rng, severity=3, width=3, depth=0, alpha=1.0):
    """One uint8 image (side, side, 3) through AugMix: `width` chains of `depth` operations (0: 1 to 3,
    drawn per chain), mixed. Returns float32 0-255."""
    weights = rng.dirichlet([alpha] * width).astype(np.float32)
    skip = np.float32(rng.beta(alpha, alpha))
    names = list(OPERATIONS)
    mix = np.zeros(image.shape, np.float32)
    for weight in weights:
        chained = image
        for _ in range(depth or rng.integers(1, 4)):
            chained = OPERATIONS[names[rng.integers(len(names))]](chained, rng, severity)
        mix += weight * chained
    return (1 - skip) * image.astype(np.float32) + skip * mix


def augmix_batch(images, index, seed, epoch, config, start=0):
    """A uint8 batch (N, side, side, 3) through augment_and_mix; uint8 out. `index`: the batch's image
    indices (images start..start+N of it): image i's draws come from (seed, epoch, index[i])."""
    out = np.empty_like(images)
    for image, i, target in zip(images, index[start:start + len(images)], out):
        rng = np.random.default_rng([seed, epoch, int(i), 5])
        mixed = augment_and_mix(image, rng, config["severity"], config["width"], config["depth"], config["alpha"])
        target[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out
