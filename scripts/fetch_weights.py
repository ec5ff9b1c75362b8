"""Stage `fetch_weights`: put the MobileNetV2 backbone weights in models/pretrained.

Usage: python scripts/fetch_weights.py --out models/pretrained

Reads `finetune_mobilenet.weights`:
- `imagenet`: Keras' ImageNet file for MobileNetV2 (alpha 1.0, no top), fetched with its
  cached downloader (~/.keras/models). Offline, set MOBILENET_WEIGHTS to a local copy (and
  MOBILENET_WEIGHTS_SHA256, or keep a SHA256SUMS beside it) and it is used instead;
- a path: that weights file, copied;
- `none`: no file; the network starts from random weights.
The folder also gets source.json (name, sha256, origin), and DVC records the file's hash, so
every result names the weights it came from.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

from cifar import data, outputs, params

IMAGENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)


def locate(weights):
    """(path or None, expected sha256 or None, origin) for the `weights` param."""
    if weights == "none":
        return None, None, "none: random initialisation"
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"finetune_mobilenet.weights = {weights!r}: no such file")
        return Path(weights), None, f"file {weights}"
    local = os.environ.get("MOBILENET_WEIGHTS")
    if local:
        sha = os.environ.get("MOBILENET_WEIGHTS_SHA256")
        sums = Path(local).with_name("SHA256SUMS")
        if not sha and sums.is_file():
            sha = data.read_sha256_file(sums, Path(local).name)
        return Path(local), sha, f"offline copy {local} (MOBILENET_WEIGHTS)"
    import keras

    cached = keras.utils.get_file(origin=IMAGENET_URL, cache_subdir="models")
    return Path(cached), None, IMAGENET_URL


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    weights = params.load(["finetune_mobilenet"])["finetune_mobilenet"]["weights"]

    path, expected, origin = locate(weights)
    with outputs.atomic_path(args.out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        source = {"weights": weights, "origin": origin, "file": None, "sha256": None}
        if path is not None:
            if expected:
                data.verify(path, expected)
            # Keep the name's suffix: Keras reads .weights.h5 and legacy .h5 differently.
            shutil.copyfile(path, tmp / path.name)
            source.update(file=path.name, sha256=outputs.sha256_of(tmp / path.name))
        outputs.write_json(tmp / "source.json", source)
    print(f"Weights: {origin}" + (f", sha256 {source['sha256']}" if source["sha256"] else ""))


if __name__ == "__main__":
    try:
        main()
    except (params.ParamsError, FileNotFoundError, data.ArchiveError) as err:
        sys.exit(f"fetch_weights: error: {err}")
