"""Stage `fetch_weights`: put the MobileNetV2 backbone weights in models/pretrained.

Usage: python scripts/fetch_weights.py --out models/pretrained

Reads `finetune_mobilenet.weights`:
- `imagenet`: Keras' ImageNet file for MobileNetV2 (alpha 1.0, no top), fetched with its
  cached downloader (~/.keras/models), checked against MOBILENET_WEIGHTS_SHA256 if it is set
  (Keras publishes no digest for this file). Offline, set MOBILENET_WEIGHTS to a local copy and
  MOBILENET_WEIGHTS_SHA256 (or keep a SHA256SUMS beside it): a copy with neither is refused;
- a path: that weights file, copied;
- `none`: no file; the network starts from random weights.
The folder also gets source.json (origin, sha256, what the sha256 was checked against), and DVC records the file's hash, so every
result names the weights it came from. The file is stored under a fixed name and source.json
holds no path of this machine, so the same bytes give the same output (and do not retrain
MobileNetV2) wherever they came from. DVC cannot see a file named by an environment variable:
after replacing the file at the same path, run `dvc repro --force fetch_weights`; MobileNetV2
then retrains only if the bytes differ.
"""

import argparse
import os
import re
import shutil
from pathlib import Path

from cifar import data, outputs
from cifar.models import mobilenet

IMAGENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
BACKBONE = "mobilenet_v2_no_top"


def locate(weights):
    """(path or None, expected sha256 or None, origin, what the sha256 was checked against) for the
    `weights` param. The origin says what kind of source it was, never a path on this machine:
    results are keyed on content."""
    if weights == "none":
        return None, None, "none: random initialisation", None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"finetune_mobilenet.weights = {weights!r}: no such file")
        return (Path(weights), None, "a local weights file (finetune_mobilenet.weights)",
                "not checked: the file params.yaml names is the user's own")
    given = os.environ.get("MOBILENET_WEIGHTS_SHA256", "").strip().lower() or None
    if given and not re.fullmatch(r"[0-9a-f]{64}", given):
        raise data.ArchiveError(f"MOBILENET_WEIGHTS_SHA256={given!r} is not a sha256 (64 hex characters)")
    local = os.environ.get("MOBILENET_WEIGHTS")
    if local:
        if not Path(local).is_file():
            raise FileNotFoundError(f"MOBILENET_WEIGHTS={local}: no such file")
        checked = "MOBILENET_WEIGHTS_SHA256"
        sums = Path(local).with_name("SHA256SUMS")
        if not given and sums.is_file():
            given, checked = data.read_sha256_file(sums, Path(local).name), f"the SHA256SUMS beside {Path(local).name}"
        if not given:
            raise data.ArchiveError(
                f"MOBILENET_WEIGHTS={local} is set but no sha256 was given to check it against: set "
                "MOBILENET_WEIGHTS_SHA256 to the file's sha256, or put a SHA256SUMS file listing it beside it")
        return Path(local), given, "an offline copy of the ImageNet weights (MOBILENET_WEIGHTS)", checked
    import keras

    try:
        # Keras publishes no digest for this file; a user who has one passes it, and get_file checks it.
        cached = keras.utils.get_file(origin=IMAGENET_URL, cache_subdir="models", file_hash=given)
    except Exception as err:  # urllib, socket, a digest mismatch and Keras' own errors: all mean no weights
        raise data.ArchiveError(
            f"could not download the ImageNet weights from {IMAGENET_URL} ({type(err).__name__}: {err}). "
            "The 'fetch_weights' stage writes models/pretrained from them; offline, set MOBILENET_WEIGHTS to a "
            "local copy (docs/pipeline.md, 'Offline copies'), or set finetune_mobilenet.weights to a file or none"
        ) from None
    checked = ("MOBILENET_WEIGHTS_SHA256" if given else
               "not checked: Keras publishes no sha256 for this file; set MOBILENET_WEIGHTS_SHA256 to check it")
    return Path(cached), given, IMAGENET_URL, checked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    weights = mobilenet.section()["weights"]

    path, expected, origin, checked = locate(weights)
    with outputs.atomic_path(args.out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        source = {"origin": origin, "file": None, "sha256": None, "sha256_checked_against": checked}
        if path is not None:
            if expected:
                data.verify(path, expected)
            # A fixed name, so the same bytes give the same output wherever they came from. The
            # suffix stays: Keras reads .weights.h5 (Keras 3) and legacy .h5 differently.
            name = BACKBONE + (".weights.h5" if path.name.endswith(".weights.h5") else ".h5")
            shutil.copyfile(path, tmp / name)
            source.update(file=name, sha256=outputs.sha256_of(tmp / name))
        outputs.write_json(tmp / "source.json", source)
    print(f"Weights: {origin}" + (f" {path}, sha256 {source['sha256']}" if source["sha256"] else ""))


if __name__ == "__main__":
    outputs.run_stage("fetch_weights", main)
