"""The seed CNN on a small folder: BatchNormalization's moving statistics against its weights.

Usage: python studies/small_folder/bn_momentum.py --archive ../shared/data/cifar-10-python.tar.gz \
           [--per-epoch 0 1 2 5] [--out studies/small_folder/bn_momentum.json]
       python studies/small_folder/bn_momentum.py --table-only   (bn_momentum.md from the JSON)

Two small folders as a user has them: the first 1,000 CIFAR-10 training images (real photos,
about 100 a class) and scikit-learn's handwritten digits, 40 a class (grey, 8x8, upscaled to
32 px); each split 80/20 into train and val, stratified (prepare's rule). The seed CNN trains
with the seed's recipe and augmentation (params.yaml shared.train and shared.augment, 25 epochs,
batch 64: 10 and 5 steps an epoch), once for each `--per-epoch` value of
cifar.training.fit.track_in_epoch (0: Keras' momentum as it is, 0.99), and its val accuracy is
measured as the pipeline measures it (inference mode: the moving statistics) and with the
statistics of the val batch itself (`model(x, training=True)`, one batch; dropout on too).
Chosen on val: 2 (bn_momentum.json; README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the cifar package

from cifar import data, outputs, params  # noqa: E402
from cifar.models import cnn  # noqa: E402
import cifar.training  # noqa: E402

fitting = sys.modules["cifar.training.fit"]  # the module (the package's `fit` is its function)


def folders(archive):
    """{name: arrays} of the two small folders, train and val."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y, *_ = data.read(archive, data.read_sha256_file(Path(archive).with_name("SHA256SUMS"), Path(archive).name))
    photos = (x[:1000], y[:1000])
    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == c)[:40] for c in range(10)])
    grey = (digits.images[keep] * (255 / 16)).astype(np.uint8)
    grey = np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2)  # 8 px -> 32 px, nearest
    digit_images = (np.repeat(grey[..., None], 3, axis=3), digits.target[keep].astype(np.uint8))
    found = {}
    for name, (images, labels) in (("cifar10_1000", photos), ("digits_400", digit_images)):
        x_train, x_val, y_train, y_val = train_test_split(images, labels, test_size=0.2, random_state=42,
                                                          stratify=labels)
        found[name] = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    return found


def measure(arrays, per_epoch, shared):
    """(val accuracy in inference mode, with the val batch's own statistics) after training."""
    import keras

    fitting.BN_STEPS_PER_AVERAGE = per_epoch  # what fit() applies
    section = params.load(["cnn"])["cnn"]
    with tempfile.TemporaryDirectory() as state:
        best, _, summary = fitting.fit(lambda: cnn.build(section, arrays["x_train"], 10), arrays, shared["train"],
                                       shared["augment"], shared["seed"], Path(state))
        model = keras.saving.load_model(best)
        x, y = arrays["x_val"].astype("float32"), arrays["y_val"]
        inference = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
        batch = float(np.mean(np.asarray(model(x, training=True)).argmax(1) == y))
    momentum = [layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    return {"per_epoch": per_epoch, "momentum": momentum, "val_accuracy": inference, "val_accuracy_batch_stats": batch,
            "best_epoch": summary["best_epoch"]}


def table(result):
    """bn_momentum.md: one row per folder and setting, from the JSON the study wrote."""
    lines = ["| folder | training images | BN_STEPS_PER_AVERAGE | momentum | val accuracy (saved model) | "
             "val accuracy (val batch's statistics) | best epoch |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        setting = r["per_epoch"] or "0 (Keras' momentum)"
        lines.append(f"| {r['folder']} | {r['train_images']} | {setting} | {r['momentum']:.3f} | {r['val_accuracy']:.1%} | "
                     f"{r['val_accuracy_batch_stats']:.1%} | {r['best_epoch']} |")
    host = result["environment"]
    return ("\n".join(lines) + f"\n\nOne seed each, on {host['cpu']}, {host['cpu_count']} cores. "
            "Written by studies/small_folder/bn_momentum.py.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true", help="write bn_momentum.md from the JSON, nothing else")
    parser.add_argument("--archive", type=Path)
    parser.add_argument("--per-epoch", type=int, nargs="+", default=[0, 1, 2, 5])
    parser.add_argument("--out", type=Path, default=Path("studies/small_folder/bn_momentum.json"))
    args = parser.parse_args()
    if not args.table_only:
        if args.archive is None:
            parser.error("--archive is required to train")
        run(args)
    with outputs.atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(table(json.loads(args.out.read_text())))


def run(args):
    shared = params.load(["shared"])["shared"]
    rows = []
    for name, arrays in folders(args.archive).items():
        for per_epoch in args.per_epoch:
            row = {"folder": name, "train_images": len(arrays["y_train"]), **measure(arrays, per_epoch, shared)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    outputs.write_json(args.out, {"rows": rows, "environment": outputs.hardware()})


if __name__ == "__main__":
    main()
