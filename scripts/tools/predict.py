"""Classify image files with a trained or exported model: the top 3 classes of each.

Usage: python scripts/tools/predict.py [--model ARTIFACT] [--json] [--top K] IMAGE [IMAGE ...]

ARTIFACT is a .keras file (models/trained/cnn.keras), a SavedModel folder
(models/export/cnn/saved_model) or a .tflite file (models/export/cnn/cnn_int8.tflite). IMAGE is
any file OpenCV reads (PNG, JPEG, BMP, TIFF, WebP, ...) of up to --max-pixels (40 megapixels,
checked from the header before decoding): 16-bit and floating-point images become 8-bit,
grayscale becomes RGB, RGBA is composited on white, an EXIF orientation is applied as browsers
apply it, and the largest centred square is resized to the model's side (32x32 for CIFAR-10;
pixel-area averaging when shrinking). Class names come from the export's metadata.json, or for
a .keras file from the prepared data it was trained on. Each conversion is reported.

A file that cannot be read gets its own error line and the others are still classified; the
exit status is 1 if any file failed, 2 if the model could not be loaded.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: the cifar package

from cifar import decode, inference, params
from cifar.models import ModelError


def most_accurate(metrics="reports/metrics/evaluate"):
    """(name, test accuracy) of the most accurate model by evaluate@NAME's metrics; ModelError if none."""
    path, results = Path(metrics), {}
    for file in sorted(path.glob("*.json")):
        try:
            results.update({file.stem: json.loads(file.read_text()).get(file.stem)})
        except (OSError, ValueError, AttributeError):
            continue
    scored = {k: v["test"]["accuracy"] for k, v in results.items() if isinstance(v, dict) and "test" in v}
    if not scored:
        raise ModelError(f"{path}/ holds no model's test accuracy: no model has been evaluated yet; run "
                         "`dvc repro evaluate` (or `make repro`), or give --model")
    best = max(scored, key=scored.get)
    return best, scored[best]


def prepared_path(root):
    """data/prepared/SOURCE.npz of the repository `root` (prepare.source; cifar10 if unreadable)."""
    try:
        source = params.load(["prepare"], Path(root) / "params.yaml")["prepare"]["source"]
    except (params.ParamsError, OSError):
        source = "cifar10"
    return Path(root) / "data" / "prepared" / f"{source}.npz"


def class_names(model_path, prepared=None):
    """Class names from the export's metadata.json beside `model_path`, else from the prepared data
    (`prepared`, default the repository's); ModelError if neither can say."""
    path = Path(model_path)
    for folder in (path, *path.parents[:2]):  # a SavedModel folder, the export folder, its parent
        meta = folder / "metadata.json"
        if meta.is_file():
            try:
                names = json.loads(meta.read_text())["classes"]
                if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                    raise TypeError("'classes' is not a list of names")
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
                raise ModelError(f"{meta} is not an export's metadata ({type(err).__name__}: {err}); it is written "
                                 "by the export stage: rerun it with `dvc repro --force --glob 'export@*'`") from None
            return tuple(names)
    prepared = Path(prepared) if prepared else prepared_path(Path(__file__).resolve().parents[2])
    try:
        with np.load(prepared, allow_pickle=False) as npz:
            return tuple(str(n) for n in npz["class_names"])
    except (OSError, KeyError, ValueError) as err:
        raise ModelError(f"{path}: no metadata.json beside it names its classes, and the prepared data "
                         f"{prepared} cannot be read ({type(err).__name__}); use an exported model "
                         "(models/export/NAME/...) or run `dvc repro prepare`") from None


def check_takes_images(predictor, path, classes):
    """ModelError unless `predictor` takes (N, side, side, 3) images and gives one probability per
    class: a model made for other input fails here, not on the first image."""
    side = predictor.side
    try:
        out = np.asarray(predictor.predict(np.zeros((1, side, side, 3), np.uint8)))
    except Exception as err:  # shape errors differ by runtime: Keras, TF, LiteRT
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelError(f"{path}: loads, but does not take {side}x{side} RGB images ({type(err).__name__}: "
                         f"{first}); this project's models take (N, side, side, 3) raw 0-255 RGB") from None
    if out.shape != (1, classes):
        raise ModelError(f"{path}: gives output of shape {out.shape[1:]} for one image, not {classes} "
                         "class probabilities; it is not a classifier of this project for these classes")


def registered_tta(path):
    """The test-time augmentation level a .keras file of the registry runs with at inference
    (params.yaml `models.NAME.tta`, NAME its file name), as evaluate measured it; 0 for any other
    file (an export holds its own)."""
    if path.suffix != ".keras":
        return 0
    try:
        registry = params.load(["models"])["models"]
    except params.ParamsError:  # run outside the repository: the file as it is
        return 0
    return registry.get(path.stem, {}).get("tta", 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help=".keras file, SavedModel folder or .tflite file "
                        "(default: the most accurate model in reports/metrics/evaluate/)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--max-pixels", type=int, default=decode.MAX_PIXELS,
                        help=f"refuse larger images, read from the header before decoding (default {decode.MAX_PIXELS:,})")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")

    try:
        if args.model is None:
            best, accuracy = most_accurate()
            args.model = Path("models/trained") / f"{best}.keras"
            print(f"Using {args.model}, the most accurate model ({accuracy:.2%} test accuracy)", file=sys.stderr)
        predictor = inference.load(args.model, registered_tta(args.model))
        names = class_names(args.model)
        check_takes_images(predictor, args.model, len(names))
    except ModelError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 2
    # OpenCV's own cap follows --max-pixels. OpenCV reads it once, so only before cv2 is imported
    # (the first image read imports it).
    if "cv2" not in sys.modules:
        os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(args.max_pixels)

    results = []
    for path in args.images:
        try:
            pixels, notes = decode.read_image(path, args.max_pixels, predictor.side)
        except decode.ImageError as err:
            results.append({"file": str(path), "error": str(err)})
            continue
        probabilities = predictor.predict(pixels[np.newaxis])[0]
        order = np.argsort(-probabilities, kind="stable")[:args.top]
        results.append({
            "file": str(path),
            "top": [{"class": names[i], "probability": float(probabilities[i])} for i in order],
            "notes": notes,
        })

    if args.json:
        print(json.dumps({"model": str(args.model), "results": results}, indent=2))
    for result in results:
        if "error" in result:
            print(f"predict: error: {result['file']}: {result['error']}", file=sys.stderr)
        elif not args.json:
            notes = f" ({'; '.join(result['notes'])})" if result["notes"] else ""
            print(f"{result['file']}{notes}")
            for entry in result["top"]:
                print(f"  {entry['class']:<12}{entry['probability'] * 100:6.2f}%")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
