"""Which model to start with on your own images: every model at its defaults on two small folders.

Usage: python studies/small_folder/advice.py --archive ../shared/data/cifar-10-python.tar.gz \
           --weights ../shared/weights/mobilenet_v2_1.0_no_top.weights.h5 [--work /tmp/advice]
       (make small-folders; make readme then writes the README's table from advice.json)

Two folders as a user has them, written as PNG files, one sub-folder per class:
- `digits`: scikit-learn's 1,797 handwritten digits (grey, 8x8);
- `cifar10_1000`: the first 1,000 CIFAR-10 training images (real photos, about 100 a class).

Each runs the README's own command in a clone of this repository's committed code,
`dvc exp run -S prepare.source=images -S prepare.images=data/folder evaluate@NAME ...`, every other
setting at its default, so prepare makes its split (test_fraction, then val_fraction) and side
(a folder's 128 px), each model trains with its own recipe, and evaluate measures it. advice.json
keeps, per folder and model, the best val accuracy (training's), the test accuracy (evaluate's,
what the exports give), the training time and precision, the host, the commit, and which weights
MobileNetV2 started from (`mobilenet_weights`: Keras' ImageNet file, or the offline copy's name and
sha256; results with a stand-in are close to, not the same as, the official weights').
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # the cifar package

from cifar import data, outputs  # noqa: E402


def folders(archive):
    """{folder name: (uint8 images N x H x W or N x H x W x 3, integer labels, class names)}."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y, _, _, names = data.read(archive, data.read_sha256_file(Path(archive).with_name("SHA256SUMS"), Path(archive).name))
    return {"digits": (np.round(digits.images * 255 / 16).astype(np.uint8), digits.target, [f"digit-{n}" for n in range(10)]),
            "cifar10_1000": (x[:1000], y[:1000], names)}


def write_folder(root, images, labels, names):
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / names[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def run_folder(work, name, images, labels, names, weights):
    """Clone the committed code, write the folder into it and run the pipeline to evaluate@*."""
    clone = work / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    write_folder(clone / "data/folder", images, labels, names)
    registry = yaml.safe_load((clone / "params.yaml").read_text())["models"]
    env = dict(os.environ, MOBILENET_WEIGHTS=str(weights)) if weights else dict(os.environ)
    subprocess.run(["dvc", "exp", "run", "-S", "prepare.source=images", "-S", "prepare.images=data/folder",
                    *[f"evaluate@{model}" for model in registry]], cwd=clone, env=env, check=True)
    prepared = json.loads((clone / "reports/metrics/prepare.json").read_text())
    rows = []
    for model in registry:
        trained = json.loads((clone / f"reports/metrics/train/{model}.json").read_text())[model]
        evaluated = json.loads((clone / f"reports/metrics/evaluate/{model}.json").read_text())[model]
        rows.append({"folder": name, "model": model, "label": registry[model]["label"],
                     "train_images": trained["train_images"], "val_images": trained["val_images"],
                     "test_images": prepared["counts"]["test"], "side": prepared["side"], "val_accuracy": trained["best_val_accuracy"],
                     "test_accuracy": evaluated["test"]["accuracy"], "wall_time_s": trained["wall_time_s"],
                     "precision": trained["precision"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def weights_identity(path):
    """What MobileNetV2 started from: Keras' ImageNet download, or a local file's name and sha256."""
    if path is None:
        return {"source": "imagenet"}
    return {"source": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True, help="CIFAR-10's archive, with SHA256SUMS beside it")
    parser.add_argument("--weights", type=Path, help="MobileNetV2's ImageNet weights file offline (MOBILENET_WEIGHTS)")
    parser.add_argument("--work", type=Path, help="where the clones go (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "studies/small_folder/advice.json")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        rows = [row for name, (images, labels, names) in folders(args.archive).items()
                for row in run_folder(Path(work), name, images, labels, names, args.weights and args.weights.resolve())]
    outputs.write_json(args.out, {"rows": rows, "commit": commit, "mobilenet_weights": weights_identity(args.weights),
                                   "environment": outputs.hardware()})


if __name__ == "__main__":
    main()
