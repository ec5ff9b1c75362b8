"""Training-time augmentation inside tf.data, uint8 all the way (the models scale).

The seed's ImageDataGenerator(rotation 15, shifts 0.1, flips, random resolution) is drawn per
image as the same distribution, its rotation, shift and flip composed into one cv2.warpAffine
(edges repeated, as fill_mode='nearest') and then the random resize/pad/crop. Batches run in
parallel map calls seeded per (seed, epoch, batch): one seed reproduces the stream, and a resumed
run sees the batches an uninterrupted one would."""

from __future__ import annotations

import cv2
import numpy as np

from cifar import augmix

# OpenCV's own thread pool only adds overhead on 32x32 images; tf.data runs batches in parallel.
cv2.setNumThreads(1)


def resize_pad_crop(image, new_size):
    """A square image resized to `new_size`, then reflect-padded or centre-cropped back to its side."""
    side = image.shape[0]
    resized = cv2.resize(image, (new_size, new_size), interpolation=cv2.INTER_LINEAR)
    if new_size < side:
        pad = side - new_size
        top, left = pad // 2, pad // 2
        return cv2.copyMakeBorder(
            resized, top, pad - top, left, pad - left, borderType=cv2.BORDER_REFLECT
        )
    start = (new_size - side) // 2
    return resized[start : start + side, start : start + side]


def affine_matrices(angles_degrees, shifts, flips, side=32):
    """(N, 2, 3) matrices: flip, rotate about the centre (cv2.getRotationMatrix2D's sign), shift."""
    center = (side - 1) / 2.0
    theta = np.deg2rad(angles_degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    mirror = np.where(flips, -1.0, 1.0)
    m = np.empty((len(theta), 2, 3))
    m[:, 0, 0], m[:, 0, 1] = cos * mirror, sin
    m[:, 1, 0], m[:, 1, 1] = -sin * mirror, cos
    m[:, 0, 2] = (1 - cos) * center - sin * center + shifts[:, 0]
    m[:, 1, 2] = sin * center + (1 - cos) * center + shifts[:, 1]
    # Flipping first maps x to (side - 1 - x): the rotation's x column moves the origin.
    m[:, :, 2] += np.where(flips, side - 1, 0)[:, None] * np.stack([cos, -sin], axis=1)
    return m


def augment_batch(images, seed, config, start=0, total=None):
    """The seed's transforms on a uint8 batch, seeded by `seed`. Split between replicas, `images` are
    images start..start+N of a batch of `total`, drawn as the whole batch."""
    rng = np.random.default_rng(seed)
    side = images.shape[1]
    n = len(images) if total is None else total
    angles = rng.uniform(-config["rotation_degrees"], config["rotation_degrees"], n)
    shift = config["shift_fraction"] * side
    shifts = rng.uniform(-shift, shift, (n, 2))
    flips = rng.random(n) < 0.5 if config["horizontal_flip"] else np.zeros(n, bool)
    sizes = (side * rng.uniform(*config["resolution_scale"], n)).astype(int)
    part = slice(start, start + len(images))
    matrices = affine_matrices(angles[part], shifts[part], flips[part], side)
    out = np.empty_like(images)
    for image, matrix, size, target in zip(images, matrices, sizes[part].tolist(), out):
        warped = cv2.warpAffine(
            image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        target[...] = resize_pad_crop(warped, size)
    return out


def flip_translate_batch(images, index, seed, epoch, translate_px, start=0):
    """airbench's augmentation: each image mirrored every other epoch (from a seeded first choice),
    then shifted by up to `translate_px` (reflect-padded). `index`: the batch's image indices."""
    part = slice(start, start + len(images))
    flips = (np.random.default_rng([seed, 3]).random(int(index.max()) + 1 if len(index) else 0)[index] < 0.5)[part]
    flips ^= bool(epoch % 2)
    out = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    if translate_px:
        t = translate_px
        padded = np.pad(out, ((0, 0), (t, t), (t, t), (0, 0)), mode="reflect")
        offsets = np.random.default_rng([seed, epoch, int(index[0]) if len(index) else 0, 4]).integers(
            0, 2 * t + 1, (len(index), 2))[part]
        side = images.shape[1]
        out = np.stack([padded[i, dy:dy + side, dx:dx + side] for i, (dy, dx) in enumerate(offsets)])
    return np.ascontiguousarray(out)


def steps_per_epoch(n, batch_size, drop_remainder=False):
    """Batches in one pass over `n` images (the last short, or dropped unless it is the only one)."""
    return n // batch_size if drop_remainder and n >= batch_size else -(-n // batch_size)


def epoch_order(n, seed, epoch):
    """The order of the `n` training images in `epoch`: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def replica_slice(n, part, parts):
    """The images of a batch of `n` that replica `part` of `parts` trains on."""
    size, extra = divmod(n, parts)
    start = part * size + min(part, extra)
    return slice(start, start + size + (part < extra))


def train_dataset(x, y, batch_size, seed, config, augment=True, epochs=1, first_epoch=0, drop_remainder=False,
                  replicas=None):
    """Shuffled, batched, augmented (x float32 0-255, y) stream for epochs first_epoch..epochs-1.

    Every draw is a function of (seed, epoch, step), so a run resumed at epoch k sees what an
    uninterrupted one sees. `config`: a model's `augment`, by its policy: seed (the seed's
    transforms), flip_translate (the fast model's) or augmix (flip_translate then cifar.augmix, its
    draws in NumPy, its operations in this graph). `replicas` = (first, count, total): `count` elements per step,
    each replica's share of the same global batch."""
    import functools

    import tensorflow as tf

    n = len(x)
    steps = steps_per_epoch(n, batch_size, drop_remainder)
    order = functools.lru_cache(maxsize=2)(lambda epoch: epoch_order(n, seed, epoch))
    first, count, total = replicas or (0, 1, 1)
    augmixing = augment and config["policy"] == "augmix"
    drawn = functools.lru_cache(maxsize=2)(lambda epoch: augmix.draws(n, seed, epoch, config["augmix"], x.shape[1]))

    def load(epoch, step, part):
        epoch, step, part = int(epoch), int(step), int(part)
        index = order(epoch)[step * batch_size:(step + 1) * batch_size]
        share = replica_slice(len(index), part, total)
        images = x[index[share]]
        if augment and config["policy"] in ("flip_translate", "augmix"):
            images = flip_translate_batch(images, index, seed, epoch, config["translate_px"], start=share.start)
        elif augment:
            images = augment_batch(images, [seed, epoch, step, 1], config, start=share.start, total=len(index))
        if augmixing:  # then AugMix, as its CIFAR recipe after crop and flip: its draws here, its ops in the graph
            return (images, y[index[share]], *(values[index[share]] for values in drawn(epoch).values()))
        return images, y[index[share]]

    def to_batch(epoch, step, part):
        if augmixing:
            images, labels, ops, amounts, weights, skip = tf.numpy_function(
                load, [epoch, step, part], [tf.uint8, tf.as_dtype(y.dtype), tf.int32, tf.float32, tf.float32, tf.float32])
            width, depth = config["augmix"]["width"], config["augmix"]["depth"] or 3
            for tensor, shape in ((ops, (None, width, depth)), (amounts, (None, width, depth)),
                                  (weights, (None, width)), (skip, (None,)), (images, (None, *x.shape[1:]))):
                tensor.set_shape(shape)
            images = augmix.mix(images, ops, amounts, weights, skip)
        else:
            images, labels = tf.numpy_function(load, [epoch, step, part], [tf.uint8, tf.as_dtype(y.dtype)])
            images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None, *y.shape[1:]))
        return tf.cast(images, tf.float32), labels

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(
        lambda epoch: tf.data.Dataset.range(steps).flat_map(
            lambda step: tf.data.Dataset.range(first, first + count).map(lambda part: (epoch, step, part))))
    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x, y, batch_size):
    """Validation/test stream: the images as stored."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels)).prefetch(
        tf.data.AUTOTUNE
    )
