"""Tune the fast model on val: each trained candidate's accuracy on the whole val split, with its
registry entry's test-time augmentation, against its training time.

Usage: python studies/fast/fast_tune.py --candidate LABEL FOLDER [--candidate ...] \
           [--out studies/fast]

Each candidate FOLDER holds what `train@fast` wrote with some settings, NAME.keras and its
training metrics NAME.json, and the params.yaml it trained with (as `make robust-tune`'s). Every
val image is classified as `evaluate` classifies test images: through the model's test-time
augmentation, so a lever is judged on the quantity the pipeline publishes, on val, and test stays
the one-off report. A lever is adopted where it buys val accuracy per second of training on one
host: the table gives both, and the host.

Writes tuning.json (one row per candidate, kept by label: a rerun measures only new or retrained
labels) and tuning.md: the settings that differ, epochs, training time and rate, val accuracy
without test-time augmentation (training's own measure) and with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robust"))  # studies/robust/, for robust_tune

from cifar import evaluation, models, outputs  # noqa: E402
from robust_tune import candidate_files, candidate_parser, differing, digest, flat, tune  # noqa: E402 (studies/robust/)


def measure_candidate(label, folder, arrays, batch_size=256):
    name, model_path, metrics_path = candidate_files(folder)
    summary = json.loads(metrics_path.read_text())[name]
    entry, section = models.entry(name, Path(folder) / "params.yaml")
    model = models.load(model_path, entry["tta"])
    probabilities = evaluation.predict(model, arrays["x_val"], batch_size)
    accuracy = float((probabilities.argmax(axis=1) == arrays["y_val"]).mean())
    return {
        "label": label, "model": name, "model_sha256": digest(model_path), "val_images": len(arrays["y_val"]),
        "tta": entry.get("tta", 0), "settings": flat(section), "epochs": summary["epochs_run"],
        "wall_time_s": summary["wall_time_s"], "train_img_per_s": summary.get("train_img_per_s"),
        "precision": summary.get("precision"), "val_accuracy_no_tta": summary["best_val_accuracy"],
        "val_accuracy": accuracy, "host": outputs.hardware()["cpu"],
    }


def markdown(rows):
    differ = differing(rows)
    head = ["candidate", *differ, "epochs", "training", "img/s", "val (no TTA)", "val"]
    lines = ["# Tuning the fast model on val", "",
             "Written by `studies/fast/fast_tune.py`; do not edit by hand. All "
             f"{rows[0]['val_images'] if rows else 0:,} val images, each model with its registry entry's "
             "test-time augmentation (the last column), as `evaluate` measures test. Training times "
             "compare only within one host.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        rate = row["train_img_per_s"]
        lines.append("| " + " | ".join([
            row["label"], *(json.dumps(row["settings"].get(key)) for key in differ), str(row["epochs"]),
            f"{row['wall_time_s'] / 60:.1f} min", f"{rate:.0f}" if rate else "-",
            f"{row['val_accuracy_no_tta']:.2%}", f"{row['val_accuracy']:.2%}"]) + " |")
    hosts = sorted({row["host"] for row in rows})
    lines += ["", f"Host: {', '.join(hosts)}.", ""]
    return "\n".join(lines)


def main():
    args = candidate_parser(__doc__.splitlines()[0], "studies/fast").parse_args()
    tune(args.candidate, args.out, args.data, measure_candidate,
         lambda row: (f"val {row['val_accuracy']:.2%} with TTA {row['tta']}, {row['val_accuracy_no_tta']:.2%} "
                      f"without; {row['wall_time_s'] / 60:.1f} min of training"), markdown)


if __name__ == "__main__":
    outputs.run_stage("fast_tune", main, errors=(ValueError, FileNotFoundError))
