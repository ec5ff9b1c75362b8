"""Stage `export`: one trained model as SavedModel, TF-Lite (float32, dynamic-range, int8) and TF.js.

Usage: python scripts/export.py --name cnn --model models/trained/cnn.keras \
           --data data/prepared/cifar10.npz --out models/export/cnn

Reads `shared.seed` and `export` (int8_calibration_images, tfjs_quantization). Writes, into
one folder that appears only when every conversion has succeeded:

    saved_model/                  Keras 3 model.export(); endpoint `serve`, float32 0-255 in
    <name>_float32.tflite         float32 in, float32 probabilities out
    <name>_dynamic_range.tflite   int8 weights; float32 in and out
    <name>_int8.tflite            integer-only; uint8 pixels in (scale 1, zero point 0),
                                  uint8 probabilities out (probability = value / 256)
    tfjs/                         TF.js graph model (model.json + shards), from the SavedModel
    metadata.json                 classes, input/output types and quantization, sizes, sha256s

The full-int8 model is calibrated on training images drawn at random (seeded). The `parity`
stage then runs every artifact on the test set.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from cifar import data, export, inference, outputs, params

def calibration_sample(x_train, count, seed):
    rng = np.random.default_rng(seed)
    return x_train[rng.permutation(len(x_train))[:min(count, len(x_train))]]


def write_tflite(path, payload):
    path.write_bytes(payload)
    interpreter = inference.TFLitePredictor(path, threads=1)  # loads: the bytes are a valid model
    return {"file": path.name, "bytes": len(payload), "sha256": outputs.sha256_of(path),
            "input": describe(interpreter.input), "output": describe(interpreter.output)}


def describe(detail):
    scale, zero = detail["quantization"]
    out = {"dtype": np.dtype(detail["dtype"]).name, "shape": [int(d) for d in detail["shape_signature"]]}
    if scale:
        out["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return out


def export_model(name, model, arrays, cfg, out):
    """Write every artifact of `model` into the (empty, temporary) folder `out`."""
    check = arrays["x_test"][:64] if len(arrays["x_test"]) else arrays["x_train"][:64]
    artifacts = {}
    diff = export.saved_model(model, out / "saved_model", check)
    print(f"{name}: SavedModel reloaded; max |difference| from Keras {diff:.1e}")
    artifacts["saved_model"] = {"file": "saved_model", "bytes": export.size_of(out / "saved_model"),
                                "input": {"dtype": "float32", "shape": [-1, 32, 32, 3]},
                                "output": {"dtype": "float32", "shape": [-1, len(arrays["class_names"])]}}
    for kind in ("float32", "dynamic_range"):
        payload = export.tflite(out / "saved_model", kind)
        artifacts[f"tflite_{kind}"] = write_tflite(out / f"{name}_{kind}.tflite", payload)

    # int8: convert a copy in which BatchNormalization after an activation is a per-channel
    # depthwise convolution (see export.fold_batchnorm_after_activation).
    folded, count = export.fold_batchnorm_after_activation(model)
    calibration = calibration_sample(arrays["x_train"], cfg["int8_calibration_images"], cfg["seed"])
    with tempfile.TemporaryDirectory(prefix="int8-", dir=out) as tmp:
        source = out / "saved_model"
        if count:
            x = check.astype(np.float32)
            diff = export.max_diff(folded.predict(x, verbose=0), model.predict(x, verbose=0))
            if diff > export.FLOAT_TOLERANCE:
                raise export.ExportError(f"{name}: folding BatchNormalization changed the output by {diff:.2e}")
            source = Path(tmp) / "saved_model"
            export.saved_model(folded, source, check)
            print(f"{name}: {count} BatchNormalization layer(s) after an activation folded into "
                  f"per-channel depthwise convolutions for int8 (max |difference| {diff:.1e})")
        payload = export.tflite(source, "int8", calibration)
    artifacts["tflite_int8"] = write_tflite(out / f"{name}_int8.tflite", payload)
    artifacts["tflite_int8"]["calibration_images"] = len(calibration)

    model_json = export.tfjs(out / "saved_model", out / "tfjs", cfg["tfjs_quantization"])
    artifacts["tfjs"] = {"file": "tfjs/model.json", "bytes": export.size_of(out / "tfjs"),
                         "quantization": cfg["tfjs_quantization"],
                         "input": {"dtype": "float32", "shape": [-1, 32, 32, 3]},
                         "converted_by": model_json.get("convertedBy")}
    for key, artifact in artifacts.items():
        print(f"{name}: {key:<20} {artifact['bytes'] / 1e6:8.2f} MB  {artifact['file']}")
    return artifacts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml models)")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["shared", "export"])
    settings = dict(cfg["export"], seed=cfg["shared"]["seed"])

    name = args.name
    entry, _ = params.model_entry(name)
    if not args.model.is_file():
        stage = entry["stage"]
        raise FileNotFoundError(f"{args.model} not found: there is no trained '{name}' model to export. "
                                f"It is written by the '{stage}' stage; run `dvc repro {stage}` "
                                f"(or `make export`, which runs every stage it needs)")
    arrays = data.load_prepared(args.data)
    model = inference.load(args.model).model  # a ModelError names the file if it is not a Keras model

    with outputs.atomic_path(args.out, is_dir=True) as tmp:
        artifacts = export_model(name, model, arrays, settings, tmp)
        outputs.write_json(tmp / "metadata.json", {
            "model": name,
            "label": entry["label"],
            "source": {"file": str(args.model), "sha256": outputs.sha256_of(args.model)},
            "classes": [str(c) for c in arrays["class_names"]],
            "input": "RGB pixels 0-255, 32x32, NHWC; scaling is inside every model",
            "artifacts": artifacts,
        })
        os.chmod(tmp, 0o755)  # a temporary folder is private; the export is served and shared
    print(f"{name}: exported to {args.out}/")


if __name__ == "__main__":
    try:
        main()
    except (outputs.StageError, FileNotFoundError) as err:
        sys.exit(f"export: error: {err}")
