"""Stage `export@NAME`: one trained model as SavedModel, TF-Lite (float32, dynamic range, int8) and TF.js.

Usage: python scripts/export.py --name cnn --model models/trained/cnn.keras \
           --data data/prepared/cifar10.npz --out models/export/cnn

Writes one folder: saved_model/ (endpoint `serve`: float32 0-255 `image` in, `probabilities`
out), NAME_float32.tflite (and NAME_float32_plain.tflite, without test-time augmentation, for a model
that ships some), NAME_dynamic_range.tflite, NAME_int8.tflite (each with TF-Lite
metadata: labels, input convention), tfjs/, labels.txt, and metadata.json (classes, tensor types
and quantization, sizes, sha256s). The int8 file is calibrated on seeded training images."""

import argparse
import os
from pathlib import Path

from cifar import data, export, models, outputs, params

class SCHEMA(params.Section):  # params.yaml `export`
    int8_calibration_images: params.number(int, 1, 50_000)
    int8_selection_images: params.number(int, 0, 50_000)
    int8_float_layers: params.number(int, 0, 100)
    tfjs_quantization: params.choice("none", "float16", "uint8")
    temperature: params.choice("none", "val")

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml models)")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["shared", "export"], schemas={"export": SCHEMA})
    settings = dict(cfg["export"], seed=cfg["shared"]["seed"])

    name = args.name
    entry, _ = models.entry(name)
    if not args.model.is_file():
        stage = models.train_stage(name)
        raise FileNotFoundError(f"{args.model} not found: there is no trained '{name}' model to export. "
                                f"It is written by the '{stage}' stage; run `dvc repro {stage}` "
                                f"(or `make export`, which runs every stage it needs)")
    arrays = data.load_prepared(args.data)
    model = models.load(args.model, stage=models.train_stage(name))  # a ModelError names the file if it is not a Keras model
    calibration = None
    if settings["temperature"] == "val":  # fitted on the trained model's own val probabilities
        _, calibration = export.calibrated(model, arrays)
        print(f"{name}: temperature {calibration['temperature']:.3f} (fitted on the val split) inside every "
              f"artifact; val NLL {calibration['val_nll']:.4f} -> {calibration['val_nll_temperature_scaled']:.4f}")

    with outputs.atomic_path(args.out, is_dir=True) as tmp:
        # The model a user runs: its temperature, then test-time augmentation at the registry entry's
        # level; and, when that is not 0, the same model without it (one float32 TF-Lite file).
        temperature = calibration and calibration["temperature"]
        shipped = export.shipped(model, entry["tta"], temperature)
        plain = export.shipped(model, 0, temperature) if entry["tta"] else None
        artifacts = export.export_all(name, shipped, arrays, settings, tmp, plain)
        classes = [str(c) for c in arrays["class_names"]]
        side = arrays["x_train"].shape[1]
        (tmp / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
        source_sha = outputs.sha256_of(args.model)
        export.add_tflite_metadata(
            tmp, artifacts, name, version=source_sha[:12],  # the trained model's identity
            description=f"{entry['label']}: classifies a {side}x{side} RGB image into {len(classes)} classes. Input: "
                        "raw 0-255 pixels (normalization mean 0, std 1); the model scales them itself.")
        outputs.write_json(tmp / "metadata.json", {
            "model": name,
            "label": entry["label"],
            "source": {"file": str(args.model), "sha256": source_sha},
            "classes": classes,
            "input": export.INPUT_CONVENTION,
            "input_shape": [int(n) for n in arrays["x_train"].shape[1:]],  # (side, side, 3)
            # The calibration inside every artifact: softmax(logits / temperature), or none.
            "temperature": calibration,
            # Test-time augmentation inside every artifact (params.yaml models.NAME.tta): views averaged.
            "test_time_augmentation": entry["tta"],
            "artifacts": artifacts,
            "stage_s": outputs.stage_seconds(),  # the export's own time; parity@NAME's metrics give it (export_stage_s)
        })
        os.chmod(tmp, 0o755)  # a temporary folder is private; the export is served and shared
    print(f"{name}: exported to {args.out}/")


if __name__ == "__main__":
    outputs.run_stage("export", main)
