"""Benchmark: the augmented training stream and CNN training throughput, against the seed's path.

Usage: python scripts/bench.py --archive data/raw/cifar-10-python.tar.gz --out reports/bench.json

All measurements use the same real CIFAR-10 training images in the same run:
- augmentation alone: the seed's Keras ImageDataGenerator(rotation 15, shifts 0.1, horizontal
  flip, preprocessing_function=random_resolution_transform).flow(x / 255.0, batch_size=64)
  against cifar.augment.train_dataset (OpenCV in parallel tf.data map calls, prefetch), timed
  over whole passes after a warm-up pass, best of `--repeats`;
- CNN training img/s (the seed's CNN, batch 64) fed by our augmented stream, by the plain
  images, and by the seed's ImageDataGenerator, each timed over `--train-steps` steps after a
  warm-up, and as a fraction of this CPU's fp32 ceiling (`--peak-gflops`, 0.24 GFLOP per image).
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from cifar import augment, data, models, outputs, params


def images_per_second(batches, limit):
    """Consume `batches` until `limit` images went by; return img/s."""
    seen, start = 0, time.perf_counter()
    for x, _ in batches:
        seen += len(x)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def seed_stream(x, y, batch_size, seed, config):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    rng = np.random.default_rng(seed)
    generator = ImageDataGenerator(
        rotation_range=config["rotation_degrees"],
        width_shift_range=config["shift_fraction"],
        height_shift_range=config["shift_fraction"],
        horizontal_flip=config["horizontal_flip"],
        preprocessing_function=lambda img: augment.random_resolution_transform(
            img, rng, config["resolution_scale"]
        ),
    )
    return generator.flow(x.astype(np.float32) / 255.0, y, batch_size=batch_size, seed=seed)


def measure(make_stream, images, repeats):
    images_per_second(make_stream(), images)  # warm-up: thread pools, tracing, caches
    return max(images_per_second(make_stream(), images) for _ in range(repeats))


# Forward + backward FLOPs of one training image through the seed's CNN (3x the forward pass).
CNN_GFLOP_PER_IMAGE = 0.24


def training_images_per_second(stream, steps, batch_size):
    """Fit the seed's CNN on `stream` for `steps` steps after a warm-up; return img/s."""
    model = models.build_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(stream, epochs=1, steps_per_epoch=max(5, steps // 5), verbose=0)  # tracing, thread pools
    start = time.perf_counter()
    model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, type=Path)
    parser.add_argument("--sha256", help="expected sha256 (default: the SHA256SUMS beside it, else CIFAR10_SHA256 or download.sha256)")
    parser.add_argument("--images", type=int, default=10_000, help="images per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=150, help="timed CNN training steps per feed")
    parser.add_argument("--peak-gflops", type=float, default=157.0,
                        help="fp32 peak of this CPU (default: 2 cores x AVX2 FMA at 2.45 GHz)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    loaded = params.load(["shared", "download"])
    cfg = loaded["shared"]
    aug, batch_size, seed = cfg["augment"], cfg["train"]["batch_size"], cfg["seed"]

    sha = args.sha256
    sums = args.archive.with_name("SHA256SUMS")
    if not sha and sums.is_file():
        sha = data.read_sha256_file(sums, args.archive.name)
    if not sha:
        sha, _ = data.trusted_sha256(loaded["download"]["sha256"])
    x, y, *_ = data.read(args.archive, sha)
    x, y = x[: args.images], y[: args.images]

    results = {
        "seed_imagedatagenerator": measure(lambda: seed_stream(x, y, batch_size, seed, aug), len(x), args.repeats),
        "tf_data_opencv": measure(lambda: augment.train_dataset(x, y, batch_size, seed, aug), len(x), args.repeats),
        "tf_data_no_augmentation": measure(
            lambda: augment.train_dataset(x, y, batch_size, seed, aug, augment=False), len(x), args.repeats
        ),
    }
    onehot = keras.utils.to_categorical(y, data.NUM_CLASSES)
    training = {  # .repeat(): enough batches for the warm-up and the timed steps
        "tf_data_opencv": training_images_per_second(
            augment.train_dataset(x, onehot, batch_size, seed, aug).repeat(), args.train_steps, batch_size),
        "no_augmentation": training_images_per_second(
            augment.train_dataset(x, onehot, batch_size, seed, aug, augment=False).repeat(),
            args.train_steps, batch_size),
        # The seed's stream yields [0, 1] images; the scale does not change the cost of a step.
        "seed_imagedatagenerator": training_images_per_second(
            seed_stream(x, onehot, batch_size, seed, aug), args.train_steps, batch_size),
    }
    ceiling = args.peak_gflops / CNN_GFLOP_PER_IMAGE
    report = {
        "augmentation_img_per_s": {k: round(v, 1) for k, v in results.items()},
        "cnn_training_img_per_s": {k: round(v, 1) for k, v in training.items()},
        "cnn_training_fraction_of_peak": {k: round(v / ceiling, 3) for k, v in training.items()},
        "augmentation_cost_of_training_throughput": round(1 - training["tf_data_opencv"] / training["no_augmentation"], 3),
        "cnn_ceiling_img_per_s": round(ceiling, 1),
        "speedup_vs_seed": round(results["tf_data_opencv"] / results["seed_imagedatagenerator"], 2),
        "images_per_pass": len(x),
        "batch_size": batch_size,
        "data": {"archive": args.archive.name, "sha256": sha},
        "environment": outputs.hardware(),
    }
    outputs.write_json(args.out, report)
    for name, rate in report["augmentation_img_per_s"].items():
        print(f"{name:>26}: {rate:10.1f} img/s")
    print(f"{'speed-up vs seed':>26}: {report['speedup_vs_seed']:10.2f}x")
    for name, rate in report["cnn_training_img_per_s"].items():
        print(f"{'CNN training, ' + name:>40}: {rate:8.1f} img/s "
              f"({report['cnn_training_fraction_of_peak'][name]:.0%} of the {ceiling:.0f} img/s ceiling)")


if __name__ == "__main__":
    main()
