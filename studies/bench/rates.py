"""Timing primitives of `make bench` (studies/bench/bench.py): images per second of a stream
(ours or the seed's ImageDataGenerator path), and of training fed by one, after a warm-up, over
whole passes or steady steps.
"""

import time

import keras
import numpy as np

from cifar import augment
from cifar.models import cnn


def images_per_second(batches, limit):
    """Consume `batches` until `limit` images went by; return img/s."""
    seen, start = 0, time.perf_counter()
    for x, _ in batches:
        seen += len(x)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def random_resolution_transform(image, rng=None, scale_range=(0.8, 1.2)):
    """The seed's preprocessing_function: a float32 [0, 1] image resized by a random factor in
    scale_range, then reflect-padded or cropped back to its side (augment.resize_pad_crop)."""
    rng = np.random.default_rng() if rng is None else rng
    as_uint8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    new_size = int(image.shape[0] * rng.uniform(*scale_range))
    return augment.resize_pad_crop(as_uint8, new_size).astype(np.float32) / 255.0


def seed_stream(x, y, batch_size, seed, config):
    from tensorflow.keras.preprocessing.image import ImageDataGenerator  # the seed's API, public in tf.keras

    rng = np.random.default_rng(seed)
    generator = ImageDataGenerator(
        rotation_range=config["rotation_degrees"],
        width_shift_range=config["shift_fraction"],
        height_shift_range=config["shift_fraction"],
        horizontal_flip=config["horizontal_flip"],
        preprocessing_function=lambda img: random_resolution_transform(
            img, rng, config["resolution_scale"]
        ),
    )
    return generator.flow(x.astype(np.float32) / 255.0, y, batch_size=batch_size, seed=seed)


def measure(make_stream, images, repeats):
    images_per_second(make_stream(), images)  # warm-up: thread pools, tracing, caches
    return max(images_per_second(make_stream(), images) for _ in range(repeats))


class BatchClock(keras.callbacks.Callback):
    """The end time of every training batch of a fit() call."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def steady_images_per_second(model, stream, steps, batch_size, steps_per_execution=1, skip=1):
    """Training img/s of `model` on `stream` in steady state: one fit() of `steps` steps, timed
    from the end of its first `skip` batch-callback calls to the end of its last (Keras calls them
    once per `steps_per_execution` steps). A fit() call's own start-up (its data iterator, the
    first batches' prefetch) is left out: training runs one long fit(), and for a model with short
    steps (the seed CNN) that start-up would otherwise weigh as much as the steps themselves."""
    steps = max(steps, (skip + 1) * steps_per_execution)
    clock = BatchClock()
    model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    images = (len(clock.ends) - skip) * steps_per_execution * batch_size
    return images / (clock.ends[-1] - clock.ends[skip - 1])


def stream_images_per_second(stream, steps, batch_size):
    """img/s of a training stream alone (augmentation and batching, no model): the rate an
    accelerator could at most be fed at. Timed after its first batch, over `steps` batches."""
    batches = iter(stream)
    next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - start)


def training_images_per_second(stream, steps, batch_size):
    """Fit the seed's CNN on `stream` for `steps` steps after a warm-up; return img/s."""
    # the seed's text, read literally (one convolution per block): the fixed baseline of every ratio
    model = cnn.build({"side": 32, "filters": [64, 128, 256], "convs_per_block": 1, "kernel_size": 3, "block_dropout": [0.25, 0.25],
                       "dense_units": 512, "dense_dropout": 0.5})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(stream, epochs=1, steps_per_epoch=max(5, steps // 5), verbose=0)  # tracing, thread pools
    return steady_images_per_second(model, stream, steps, batch_size)
