"""Stage `fetch_weights@NAME`: one model's pretrained weights in models/pretrained/NAME/.

Usage: python scripts/fetch_weights.py --name NAME --out models/pretrained/NAME

A model params.yaml `fetch_weights` does not name starts from random weights (source.json says
so). For one it names (`fetch_weights.mobilenet`): `imagenet`, Keras' file for its module's
IMAGENET_URL through the cached downloader, checked against MOBILENET_WEIGHTS_SHA256 if set
(Keras publishes no digest); offline, MOBILENET_WEIGHTS names a local copy, which needs that
digest or a SHA256SUMS beside it; a path, copied; `none`. The file gets a fixed name and
source.json no local path, so the same bytes give the same output wherever they came from.
DVC cannot see a file named by an environment variable: after replacing it, run
`dvc repro --force fetch_weights@NAME` (the model retrains only if the bytes differ)."""

import argparse
import os
import re
import shutil
from pathlib import Path

from cifar import data, models, outputs, params


def locate(weights, url, env="MOBILENET_WEIGHTS", key="fetch_weights.mobilenet"):
    """(path or None, expected sha256 or None, origin, what the sha256 is checked against) for
    `weights`; the origin names the kind of source, never a local path."""
    if weights == "none":
        return None, None, "none: random initialisation", None
    if weights != "imagenet" or url is None:
        if weights == "imagenet":
            raise params.ParamsError(f"params.yaml: {key} = 'imagenet', but this model's module names no ImageNet file "
                                     "(IMAGENET_URL); give the path of a weights file")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{key} = {weights!r}: no such file")
        return (Path(weights), None, f"a local weights file ({key})",
                "not checked: the file params.yaml names is the user's own")
    given = os.environ.get(f"{env}_SHA256", "").strip().lower() or None
    if given and not re.fullmatch(r"[0-9a-f]{64}", given):
        raise data.ArchiveError(f"{env}_SHA256={given!r} is not a sha256 (64 hex characters)")
    local = os.environ.get(env)
    if local:
        if not Path(local).is_file():
            raise FileNotFoundError(f"{env}={local}: no such file")
        checked = f"{env}_SHA256"
        sums = Path(local).with_name("SHA256SUMS")
        if not given and sums.is_file():
            given, checked = data.read_sha256_file(sums, Path(local).name), f"the SHA256SUMS beside {Path(local).name}"
        if not given:
            raise data.ArchiveError(
                f"{env}={local} is set but no sha256 was given to check it against: set "
                f"{env}_SHA256 to the file's sha256, or put a SHA256SUMS file listing it beside it")
        return Path(local), given, f"an offline copy of the ImageNet weights ({env})", checked
    import keras

    try:
        # Keras publishes no digest for this file; a user who has one passes it, and get_file checks it.
        cached = keras.utils.get_file(origin=url, cache_subdir="models", file_hash=given)
    except Exception as err:  # urllib, socket, a digest mismatch and Keras' own errors: all mean no weights
        raise data.ArchiveError(
            f"could not download the ImageNet weights from {url} ({type(err).__name__}: {err}). "
            f"The 'fetch_weights' stage writes models/pretrained from them; offline, set {env} to a "
            f"local copy (docs/pipeline.md, 'Offline copies'), or set {key} to a file or none"
        ) from None
    checked = (f"{env}_SHA256" if given else
               f"not checked: Keras publishes no sha256 for this file; set {env}_SHA256 to check it")
    return Path(cached), given, url, checked


def place(name, entry, weights, folder):
    """The model's weights file and source.json, written into `folder`."""
    source = {"origin": "none: random initialisation", "file": None, "sha256": None, "sha256_checked_against": None}
    if weights is not None:
        found = models.module(entry)
        path, expected, source["origin"], source["sha256_checked_against"] = locate(
            weights, getattr(found, "IMAGENET_URL", None), f"{name.upper()}_WEIGHTS", f"fetch_weights.{name}")
        if path is not None:
            if expected:
                data.verify(path, expected)
            # A fixed name, so the same bytes give the same output wherever they came from. The
            # suffix stays: Keras reads .weights.h5 (Keras 3) and legacy .h5 differently.
            file = getattr(found, "BACKBONE", name) + (".weights.h5" if path.name.endswith(".weights.h5") else ".h5")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / file)
            source.update(file=file, sha256=outputs.sha256_of(folder / file))
    folder.mkdir(parents=True, exist_ok=True)
    outputs.write_json(folder / "source.json", source)
    print(f"{name}: weights: {source['origin']}" + (f", sha256 {source['sha256']}" if source["sha256"] else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml `models`)")
    parser.add_argument("--out", required=True, type=Path, help="the model's folder (models/pretrained/NAME)")
    args = parser.parse_args()
    loaded = params.load(["models", "fetch_weights"])
    registry, named = loaded["models"], loaded["fetch_weights"] or {}
    for name, weights in named.items():
        if name not in registry:
            raise params.ParamsError(f"params.yaml: fetch_weights.{name}: no model '{name}' in the models registry; "
                                     f"registered: {', '.join(registry)}")
        params.check(weights, params.weights_file, f"fetch_weights.{name}")
    if args.name not in registry:
        raise params.ParamsError(f"params.yaml: no model '{args.name}' in the models registry; "
                                 f"registered: {', '.join(registry)}")
    with outputs.atomic_path(args.out, is_dir=True) as tmp:
        place(args.name, registry[args.name], named.get(args.name), tmp)


if __name__ == "__main__":
    outputs.run_stage("fetch_weights", main)
