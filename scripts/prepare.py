"""Stage `prepare`: verify and read the archive, split train/val, store compact uint8 arrays.

Usage: python scripts/prepare.py --archive data/raw/cifar-10-python.tar.gz \
           --out data/prepared/cifar10.npz --metrics reports/metrics/prepare.json

The archive is checked before anything is unpickled, against the sha256 the user trusts: the one
given for an offline copy (CIFAR10_SHA256, or the SHA256SUMS beside CIFAR10_ARCHIVE), else
`download.sha256`, the official archive's; never against anything the pipeline wrote itself. The validation split is the seed's
train_test_split(test_size=prepare.val_fraction, random_state=shared.seed). Pixels stay uint8
0-255: the models scale them, so exported models take raw RGB.
"""

import argparse
import collections
from pathlib import Path

import numpy as np

from cifar import data, outputs, params


def class_counts(labels, names):
    counts = collections.Counter(labels.tolist())
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["shared", "download", "prepare"])
    seed, prep = cfg["shared"]["seed"], cfg["prepare"]

    if not args.archive.is_file():
        raise FileNotFoundError(f"{args.archive} not found: it is written by the 'download' stage; "
                                "run `dvc repro download`")
    expected, source = data.trusted_sha256(cfg["download"]["sha256"])
    print(f"Verifying {args.archive} against sha256 {expected} ({source})")
    x_train_full, y_train_full, x_test, y_test, names = data.read(args.archive, expected)
    if prep["train_limit"]:
        x_train_full, y_train_full = x_train_full[: prep["train_limit"]], y_train_full[: prep["train_limit"]]
    if prep["test_limit"]:
        x_test, y_test = x_test[: prep["test_limit"]], y_test[: prep["test_limit"]]
    x_train, x_val, y_train, y_val = data.split(x_train_full, y_train_full, prep["val_fraction"], seed)

    from keras.utils import to_categorical

    for split_name, labels in (("y_train", y_train), ("y_val", y_val), ("y_test", y_test)):
        print(f"{split_name} shape: {to_categorical(labels, data.NUM_CLASSES).shape}")
    print(f"x_train {x_train.shape}, x_val {x_val.shape}, x_test {x_test.shape} (uint8 0-255)")

    data.save_prepared(args.out, {
        "x_train": x_train, "y_train": y_train,
        "x_val": x_val, "y_val": y_val,
        "x_test": x_test, "y_test": y_test,
        "class_names": np.array(names),
        "archive_sha256": np.array(expected),
    })
    outputs.write_json(args.metrics, {
        "source": {"archive": args.archive.name, "sha256": expected},
        "environment": outputs.hardware(),
        "counts": {"train": len(y_train), "val": len(y_val), "test": len(y_test)},
        "per_class": {
            "train": class_counts(y_train, names),
            "val": class_counts(y_val, names),
            "test": class_counts(y_test, names),
        },
    })
    print(f"Wrote {args.out} and {args.metrics}")


if __name__ == "__main__":
    outputs.run_stage("prepare", main)
