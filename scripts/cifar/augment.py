"""Training-time augmentation: the seed's transforms, done with OpenCV inside tf.data.

The seed fed Keras' ImageDataGenerator(rotation_range=15, width_shift_range=0.1,
height_shift_range=0.1, horizontal_flip=True, preprocessing_function=random_resolution_transform).
ImageDataGenerator applies its random affine transform first and the preprocessing function
after it, one image at a time through scipy. Here the same distribution of transforms is drawn
per image, but the rotation, shift and flip are composed into one 2x3 matrix and applied with a
single cv2.warpAffine (bilinear, edge pixels repeated as in its default fill_mode='nearest'),
followed by the random-resolution resize/pad/crop. Whole batches run in parallel tf.data map
calls, seeded per (seed, epoch, batch), so the stream is reproducible from one seed, a resumed run
sees the batches an uninterrupted one would, and training never waits.
Images stay uint8 0-255 all the way; the models scale them.
"""

from __future__ import annotations

import cv2
import numpy as np

from cifar import augmix

# OpenCV's own thread pool only adds overhead on 32x32 images; tf.data runs batches in parallel.
cv2.setNumThreads(1)


def resize_pad_crop(image, new_size):
    """Resize a square uint8 image (side, side, 3) to new_size, then reflect-pad or center-crop
    back to its side."""
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


def random_resolution_transform(image, rng=None, scale_range=(0.8, 1.2)):
    """The seed's custom transform: float32 [0,1] (32,32,3) in, float32 [0,1] (32,32,3) out.

    Converts to uint8 for OpenCV, resizes by a random factor in scale_range, pads back to
    32x32 with cv2.BORDER_REFLECT when smaller or crops when larger (any square side alike).
    """
    rng = np.random.default_rng() if rng is None else rng
    as_uint8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    new_size = int(image.shape[0] * rng.uniform(*scale_range))
    return resize_pad_crop(as_uint8, new_size).astype(np.float32) / 255.0


def affine_matrices(angles_degrees, shifts, flips, side=32):
    """(N,2,3) matrices for images of `side` px: flip about the vertical axis, rotate about the
    center, then shift.

    The rotation is cv2.getRotationMatrix2D's (positive angle = counter-clockwise), built for
    the whole batch at once because per-image numpy calls cost more than the warp itself.
    """
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
    """Augment a uint8 batch (N, side, side, 3) with a generator seeded by `seed` (an int or a list of
    ints, as numpy.random.default_rng takes); returns uint8. When the batch is split between
    replicas, `images` are images start..start+N of a batch of `total`: the draws are the whole
    batch's, so every image gets the transform it gets unsplit."""
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
    """airbench's augmentation: alternating horizontal flip and random translation.

    Each image is mirrored in every other epoch, starting from a random (seeded) first choice,
    so over two epochs every image is seen both ways; then it is shifted by up to
    `translate_px` pixels each way (reflect-padded, cropped back to its side). uint8 in and out.
    `index`: the batch's image indices; `images` are images start..start+N of it (all of it
    unless the batch is split between replicas; the draws are the whole batch's).
    """
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
    """Batches in one pass over `n` images: the last one may be short, or is left out (unless it
    is the only one: fewer images than one batch still make one step)."""
    return n // batch_size if drop_remainder and n >= batch_size else -(-n // batch_size)


def epoch_order(n, seed, epoch):
    """The order of the `n` training images in `epoch`: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def replica_slice(n, part, parts):
    """Images of a batch of `n` that replica `part` of `parts` trains on: consecutive, equal shares
    (the first n % parts replicas take one more)."""
    size, extra = divmod(n, parts)
    start = part * size + min(part, extra)
    return slice(start, start + size + (part < extra))


def train_dataset(x, y, batch_size, seed, config, augment=True, epochs=1, first_epoch=0, drop_remainder=False,
                  replicas=None):
    """Shuffled, batched, augmented (x float32 0-255, y) stream for epochs first_epoch..epochs-1.

    Every draw is a function of (seed, epoch, step): the image order of each epoch and the
    augmentation of each batch. So epochs differ from each other, a rerun with the same seed
    repeats them, and a run resumed at epoch k sees exactly the batches an uninterrupted run
    sees from epoch k on. The stream holds steps_per_epoch(len(x), batch_size, drop_remainder)
    batches per epoch; with drop_remainder the images left over (a different few each epoch) are
    not seen that epoch, so BatchNormalization never normalises a tiny last batch.
    `config` is the seed's transforms (shared.augment), {"policy": "flip_translate",
    "translate_px": N} (flip_translate_batch, the fast model's), or {"policy": "augmix",
    "translate_px": N, "augmix": {severity, width, depth, alpha}}: flip_translate, then
    AugMix (the robust fast model's): cifar.augmix's draws for the epoch, its operations as
    TensorFlow ops in this pipeline's graph.

    `replicas` = (first, count, total): training split between `total` replicas (several
    workers), this stream feeding replicas first..first+count-1. Each step then yields `count`
    elements, each replica's share of the same global batch (`replica_slice`), augmented exactly
    as in the unsplit batch; `batch_size` stays the global batch.
    """
    import functools

    import tensorflow as tf

    n = len(x)
    steps = steps_per_epoch(n, batch_size, drop_remainder)
    order = functools.lru_cache(maxsize=2)(lambda epoch: epoch_order(n, seed, epoch))
    first, count, total = replicas or (0, 1, 1)
    augmixing = augment and config.get("policy") == "augmix"
    drawn = functools.lru_cache(maxsize=2)(lambda epoch: augmix.draws(n, seed, epoch, config["augmix"], x.shape[1]))

    def load(epoch, step, part):
        epoch, step, part = int(epoch), int(step), int(part)
        index = order(epoch)[step * batch_size:(step + 1) * batch_size]
        share = replica_slice(len(index), part, total)
        images = x[index[share]]
        if augment and config.get("policy") in ("flip_translate", "augmix"):
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
    """Validation/test stream: the images exactly as stored, never augmented."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels)).prefetch(
        tf.data.AUTOTUNE
    )
