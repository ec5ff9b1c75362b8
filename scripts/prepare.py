"""Stage `prepare`: read the data (the CIFAR-10 archive, or your own images), split it, store uint8 arrays.

Usage: python scripts/prepare.py --archive data/raw/cifar-10-python.tar.gz \
           --out data/prepared/cifar10.npz --metrics reports/metrics/prepare.json

`prepare.source: cifar10`: the archive is checked against the sha256 the user trusts before
anything is unpickled; val is train_test_split(test_size=prepare.val_fraction,
random_state=prepare.split_seed). `prepare.source: images`: the folder `prepare.images` read by
cifar.images at `prepare.side` px (null: FOLDER_SIDE). Pixels stay 0-255 (the models scale);
the file holds the class names and the digest of its source, the metrics the per-class counts."""

import argparse
import collections
from pathlib import Path

import numpy as np

from cifar import data, outputs, params


def class_counts(labels, names):
    counts = collections.Counter(labels.tolist())
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


def imbalance(labels, names):
    """The training split's largest class count over its smallest (noted above 1.5); None if a class is empty."""
    counts = class_counts(labels, names)
    ratio = round(max(counts.values()) / min(counts.values()), 2) if min(counts.values()) else None
    if ratio is None or ratio > 1.5:
        print(f"prepare: note: classes are imbalanced (training images: "
              f"{', '.join(f'{n} {c}' for n, c in counts.items())}); accuracy is then dominated by the large "
              "classes: read evaluate's per-class accuracy, and consider training with balanced class weights "
              "(-S shared.train.class_weight=balanced)")
    return ratio


# A folder's side where prepare.side is null: MobileNetV2's `input_size`, the largest side a model
# of the registry works at, so it sees the photos' own pixels (the others downscale inside).
FOLDER_SIDE = 128


def resized(images, side):
    """`images` at `side` px, each resized as an image file is (cifar.decode.resize_square)."""
    from cifar.decode import resize_square

    if side is None or images.shape[1] == side:
        return images
    return np.stack([resize_square(image, side) for image in images])


def from_archive(archive, cfg, seed):
    """CIFAR-10's arrays, class names and source from the verified archive."""
    prep = cfg["prepare"]
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} not found: it is written by the 'download' stage; "
                                "run `dvc repro download`")
    expected, source = data.trusted_sha256(cfg["download"]["sha256"])
    print(f"Verifying {archive} against sha256 {expected} ({source})")
    x_train_full, y_train_full, x_test, y_test, names = data.read(archive, expected)
    if prep["train_limit"]:
        x_train_full, y_train_full = x_train_full[: prep["train_limit"]], y_train_full[: prep["train_limit"]]
    if prep["test_limit"]:
        x_test, y_test = x_test[: prep["test_limit"]], y_test[: prep["test_limit"]]
    x_train, x_val, y_train, y_val = data.split(x_train_full, y_train_full, prep["val_fraction"], seed)
    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}
    for key in ("x_train", "x_val", "x_test"):
        arrays[key] = resized(arrays[key], prep["side"])
    return arrays, names, {"archive": archive.name, "sha256": expected}


def from_images(cfg, seed):
    """The image folder's arrays, class names and source."""
    from cifar import images

    prep = cfg["prepare"]
    folder, side = Path(prep["images"]), prep["side"] or FOLDER_SIDE
    print(f"Reading {folder} (one sub-folder per class), images made {side}x{side}")
    arrays, names, report = images.prepare(folder, side, prep["test_fraction"], prep["val_fraction"],
                                           prep["max_unreadable"], seed)
    for split, limit in (("train", prep["train_limit"]), ("test", prep["test_limit"])):
        if limit:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][:limit], arrays[f"y_{split}"][:limit]
    return arrays, names, {"images": str(folder), "sha256": report["sha256"], "files": report["files"],
                           "own_test_split": report["own_test_split"], "unreadable": report["unreadable"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, type=Path, help="the CIFAR-10 archive (prepare.source: cifar10)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["download", "prepare"])
    seed = cfg["prepare"]["split_seed"]
    if cfg["prepare"]["source"] == "images":
        arrays, names, source = from_images(cfg, seed)
    else:
        arrays, names, source = from_archive(args.archive, cfg, seed)

    print(f"{len(names)} classes: {', '.join(names)}")
    for split in ("train", "val", "test"):  # the seed's printout: the one-hot label arrays' shapes
        print(f"y_{split} shape: {(len(arrays[f'y_{split}']), len(names))}")
    print(f"x_train {arrays['x_train'].shape}, x_val {arrays['x_val'].shape}, x_test {arrays['x_test'].shape} "
          "(uint8 0-255)")
    data.save_prepared(args.out, {
        **arrays,
        "class_names": np.array(names),
        "archive_sha256": np.array(source["sha256"]),
    })
    outputs.write_json(args.metrics, {
        "source": source,
        "environment": outputs.hardware(),
        "classes": list(names),
        "side": int(arrays["x_train"].shape[1]),
        # What every later stage holds in memory for the images (uint8 side x side x 3 each).
        "images_mb": round(sum(arrays[f"x_{split}"].nbytes for split in ("train", "val", "test")) / 1e6, 1),
        "counts": {"train": len(arrays["y_train"]), "val": len(arrays["y_val"]), "test": len(arrays["y_test"])},
        "per_class": {split: class_counts(arrays[f"y_{split}"], names) for split in ("train", "val", "test")},
        # The largest class over the smallest, in the training split (1: balanced; the splits stay stratified).
        "imbalance": imbalance(arrays["y_train"], names),
        "stage_s": outputs.stage_seconds(),
    })
    print(f"Wrote {args.out} and {args.metrics}")


if __name__ == "__main__":
    outputs.run_stage("prepare", main)
