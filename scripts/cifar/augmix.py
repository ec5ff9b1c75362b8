"""AugMix (Hendrycks et al., ICLR 2020) for uint8 batches, as batched TensorFlow ops.

Each image gets `width` chains of 1-3 (or `depth`) operations at `severity`, mixed with
Dirichlet(alpha) weights, and the mix with the image by Beta(alpha, alpha). The operations are
AugMix's set for corruption benchmarks, computed as its PIL code computes them (test_augmix.py
compares each with Pillow); EXCLUDED names those its paper leaves out and the corruption each
overlaps. `draws` makes an epoch's choices in NumPy from (seed, epoch, image) alone; `mix` applies
a batch's in TensorFlow ops, each kind of operation on the images that take it."""

from __future__ import annotations

import numpy as np

# AugMix's operations for corruption benchmarks (its augmentations.augmentations), in a fixed
# order: an operation's number in a draw is its index here.
OPERATIONS = ("autocontrast", "equalize", "posterize", "solarize", "rotate", "shear_x", "shear_y",
              "translate_x", "translate_y")
# AugMix's operations that its paper leaves out for corruption benchmarks, and what each overlaps.
EXCLUDED = {"contrast": "contrast", "color": "saturate", "brightness": "brightness and darken",
            "sharpness": "the blurs"}
NONE = -1  # no operation: the chain is shorter than this step
CODE = {name: i for i, name in enumerate(OPERATIONS)}


def amounts(ops, levels, signs, side):
    """Each drawn operation's parameter from its level, as AugMix's int_ and float_parameter make it."""
    per_op = {
        "posterize": 4 - np.floor(levels * 4),
        "solarize": 256 - np.floor(levels * 256),
        "rotate": signs * np.floor(levels * 30),
        "shear_x": signs * levels * 0.3, "shear_y": signs * levels * 0.3,
        "translate_x": signs * np.floor(levels * side / 3), "translate_y": signs * np.floor(levels * side / 3),
    }
    out = np.zeros(ops.shape, np.float32)
    for name, values in per_op.items():
        out = np.where(ops == CODE[name], values, out)
    return out.astype(np.float32)


BLOCK = 1024  # images drawn from one generator: image i's draws come from block i // BLOCK


def draws(n, seed, epoch, config, side):
    """Every choice of `epoch` for images 0..n-1: "ops" (n, width, steps) (NONE past a chain's end),
    their "amounts", "weights" (n, width) and "skip" (n,); row i depends on (seed, epoch, i) only."""
    width, alpha, steps = config["width"], config["alpha"], config["depth"] or 3
    blocks = []
    for block in range(-(-n // BLOCK)):
        rng = np.random.default_rng([seed, epoch, block, 5])
        weights = rng.dirichlet([alpha] * width, size=BLOCK).astype(np.float32)
        skip = rng.beta(alpha, alpha, BLOCK).astype(np.float32)
        depth = np.full((BLOCK, width), steps) if config["depth"] else rng.integers(1, 4, (BLOCK, width))
        ops = rng.integers(0, len(OPERATIONS), (BLOCK, width, steps))
        ops[np.arange(steps) >= depth[..., None]] = NONE
        levels = rng.uniform(0.1, config["severity"], (BLOCK, width, steps)) / 10
        signs = np.where(rng.random((BLOCK, width, steps)) < 0.5, 1.0, -1.0)
        blocks.append({"ops": ops.astype(np.int32), "amounts": amounts(ops, levels, signs, side), "weights": weights,
                       "skip": skip})
    return {key: np.concatenate([b[key] for b in blocks])[:n] for key in ("ops", "amounts", "weights", "skip")}


def _affine_rows(ops, amounts, side):
    """Per image, TF's 8 projective-transform numbers from output to input pixel, as PIL's AFFINE and
    rotate compute them (on pixel centres); identity where the operation is not geometric."""
    import tensorflow as tf

    zero, one = tf.zeros_like(amounts), tf.ones_like(amounts)
    radians = -amounts * (np.pi / 180)  # PIL's rotate: counter-clockwise by `degrees`
    cos, sin = tf.cos(radians), tf.sin(radians)
    centre = side / 2
    rows = {  # (a, b, c, d, e, f): input centre = (a x + b y + c, d x + e y + f) of output centre (x, y)
        "rotate": (cos, sin, centre - cos * centre - sin * centre, -sin, cos, centre + sin * centre - cos * centre),
        "shear_x": (one, amounts, zero, zero, one, zero),
        "shear_y": (one, zero, zero, amounts, one, zero),
        "translate_x": (one, zero, amounts, zero, one, zero),
        "translate_y": (one, zero, zero, zero, one, amounts),
    }
    a, b, c, d, e, f = one, zero, zero, zero, one, zero
    for name, row in rows.items():
        chosen = tf.equal(ops, CODE[name])
        a, b, c, d, e, f = (tf.where(chosen, new, old) for new, old in zip(row, (a, b, c, d, e, f)))
    # centres to indices: index_in = a (x + .5) + b (y + .5) + c - .5
    return tf.stack([a, b, c + 0.5 * (a + b - 1), d, e, f + 0.5 * (d + e - 1), zero, zero], axis=1)


def _tables(images, ops):
    """Per image and channel, the 256-entry table of autocontrast or equalize, as PIL's ImageOps."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    values = tf.range(256, dtype=tf.float32)[None, None, :]
    # Each image-channel's histogram, in one bincount.
    channel_first = tf.transpose(images, [0, 3, 1, 2])
    bins = tf.reshape(tf.range(batch * 3) * 256, [batch, 3, 1, 1]) + channel_first
    histogram = tf.reshape(tf.math.bincount(tf.reshape(bins, [-1]), minlength=batch * 3 * 256,
                                            maxlength=batch * 3 * 256), [batch, 3, 256])
    present = histogram > 0
    index = tf.range(256)[None, None, :]
    low = tf.cast(tf.reduce_min(tf.where(present, index, 256), axis=2, keepdims=True), tf.float32)
    high = tf.cast(tf.reduce_max(tf.where(present, index, -1), axis=2, keepdims=True), tf.float32)
    # autocontrast: int(v * scale + offset), scale = 255 / (high - low), offset = -low * scale
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = tf.where(high > low, tf.clip_by_value(tf.floor(values * scale - low * scale + 1e-4), 0, 255), values)
    # equalize: step = (pixels - those of the last present value) // 255; lut = (step // 2 + pixels below) // step
    counts = tf.cast(histogram, tf.float32)
    last = tf.reduce_sum(tf.where(index == tf.cast(high, tf.int32), counts, 0.0), axis=2, keepdims=True)
    step = tf.floor((tf.reduce_sum(counts, axis=2, keepdims=True) - last) / 255)
    below = tf.cumsum(counts, axis=2, exclusive=True)
    equalized = tf.where(step > 0, tf.minimum(tf.floor((tf.floor(step / 2) + below) / tf.maximum(step, 1.0)), 255.0),
                         values)
    return tf.cast(tf.where(tf.equal(ops, CODE["autocontrast"])[:, None, None], stretched, equalized), tf.int32)


def _warp(images, ops, amounts, side):
    """Rotations and shears as PIL: bilinear inside the image, black outside."""
    import keras
    import tensorflow as tf

    rows = _affine_rows(ops, amounts, side)
    warped = keras.ops.image.affine_transform(images, rows, interpolation="bilinear", fill_mode="nearest")
    grid = tf.range(side, dtype=tf.float32)
    x, y = grid[None, None, :], grid[None, :, None]
    source_x = rows[:, 0, None, None] * x + rows[:, 1, None, None] * y + rows[:, 2, None, None]
    source_y = rows[:, 3, None, None] * x + rows[:, 4, None, None] * y + rows[:, 5, None, None]
    inside = ((source_x >= -0.5) & (source_x < side - 0.5) & (source_y >= -0.5) & (source_y < side - 0.5))
    return tf.where(inside[..., None], tf.round(warped), 0.0)


def _shift(images, ops, amounts, side):
    """Translations by whole pixels: nearest-neighbour, black fill."""
    import keras

    return keras.ops.image.affine_transform(images, _affine_rows(ops, amounts, side), interpolation="nearest",
                                            fill_mode="constant", fill_value=0)


def _lookup(images, ops, amounts):
    """Autocontrast and equalize, each image-channel through its table."""
    import tensorflow as tf

    pixels = tf.cast(images, tf.int32)
    table = _tables(pixels, ops)  # (batch, 3, 256)
    batch = tf.shape(images)[0]
    offsets = tf.reshape(tf.range(batch * 3) * 256, [batch, 1, 1, 3])
    return tf.cast(tf.gather(tf.reshape(table, [-1]), pixels + offsets), tf.float32)


def _pixelwise(images, ops, amounts):
    """Posterize (top `amount` bits) and solarize (at or above `amount` inverted)."""
    import tensorflow as tf

    amount = amounts[:, None, None, None]
    kept_bits = tf.clip_by_value(tf.cast(amount, tf.int32), 0, 8)
    mask = tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, 8 - kept_bits), 255)
    posterized = tf.cast(tf.bitwise.bitwise_and(tf.cast(images, tf.int32), mask), tf.float32)
    solarized = tf.where(images < amount, images, 255 - images)
    return tf.where(tf.equal(ops, CODE["posterize"])[:, None, None, None], posterized, solarized)


def _step(images, ops, amounts, side):
    """One chain step: each image through its own operation (NONE: unchanged)."""
    import tensorflow as tf

    def any_of(*names):
        return tf.reduce_any(tf.stack([tf.equal(ops, CODE[name]) for name in names]), axis=0)

    for chosen, apply in ((any_of("rotate", "shear_x", "shear_y"), lambda *a: _warp(*a, side)),
                          (any_of("translate_x", "translate_y"), lambda *a: _shift(*a, side)),
                          (any_of("autocontrast", "equalize"), _lookup),
                          (any_of("posterize", "solarize"), _pixelwise)):
        at = tf.where(chosen)
        images = tf.tensor_scatter_nd_update(
            images, at, apply(tf.gather_nd(images, at), tf.gather_nd(ops, at), tf.gather_nd(amounts, at)))
    return images


def mix(images, ops, amounts, weights, skip):
    """AugMix on a uint8 batch with its rows of `draws`; uint8 out."""
    import tensorflow as tf

    side = images.shape[1]
    x = tf.cast(images, tf.float32)
    mixed = tf.zeros_like(x)
    for chain in range(ops.shape[1]):
        chained = x
        for step in range(ops.shape[2]):
            chained = _step(chained, ops[:, chain, step], amounts[:, chain, step], side)
        mixed += weights[:, chain, None, None, None] * chained
    out = (1 - skip[:, None, None, None]) * x + skip[:, None, None, None] * mixed
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
