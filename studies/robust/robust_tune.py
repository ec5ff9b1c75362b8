"""Tune the robust model on val: clean and corrupted accuracy of trained candidates on val images.

Usage: python studies/robust/robust_tune.py --candidate LABEL FOLDER [--candidate ...] \
           [--images 1000] [--out studies/robust]

Each candidate FOLDER holds what a training stage wrote, NAME.keras and its training metrics
NAME.json (NAME: the registry entry, their top key), and the params.yaml it trained with: a run of
`train@fast_robust` with other settings, or the plain fast model as the baseline. The model runs
with its entry's test-time augmentation. The
first `--images` **val** images are corrupted exactly as the robustness stage corrupts test
images (params.yaml robustness.corruptions, severities 1-5, drawn from shared.seed), so settings
are chosen on val and the robustness stage's test figure stays a one-off report.

Writes tuning.json (one row per candidate, kept by label: a rerun measures only new labels) and
tuning.md: the training settings that differ, epochs, training time and val accuracy, clean and
mean corrupted val accuracy, and each corruption's mean.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package

from cifar import data, models, outputs, params  # noqa: E402


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flat(values, prefix=""):
    """{"augment.augmix.severity": 3, ...}: nested settings as dotted keys."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def candidate_files(folder):
    """(registry name, model path, training metrics) of a candidate folder."""
    folder = Path(folder)
    found = [p for p in folder.glob("*.json") if (folder / f"{p.stem}.keras").is_file()]
    if len(found) != 1 or not (folder / "params.yaml").is_file():
        raise FileNotFoundError(f"{folder}: expected one NAME.keras with its NAME.json, and params.yaml")
    return found[0].stem, folder / f"{found[0].stem}.keras", found[0]


def measure_candidate(label, folder, arrays, cfg, seed):
    import robustness  # scripts/robustness.py: the stage's own corruption and measurement code

    folder = Path(folder)
    name, model_path, metrics_path = candidate_files(folder)
    trained = json.loads(metrics_path.read_text())
    entry, section = models.entry(name, folder / "params.yaml")
    model = models.load(model_path, entry["tta"])
    count = min(cfg["images"], len(arrays["y_val"]))
    clean, labels = arrays["x_val"][:count], arrays["y_val"][:count]
    corrupted = robustness.corrupted_sets(clean, cfg["corruptions"], seed)
    result = robustness.measure(model, clean, labels, corrupted, cfg["batch_size"])
    summary = trained[name]
    return {
        "label": label, "model": name, "model_sha256": digest(model_path), "val_images": int(count),
        "tta": entry.get("tta", 0), "settings": flat(section),
        "epochs": summary["epochs_run"], "wall_time_s": summary["wall_time_s"],
        "best_val_accuracy": summary["best_val_accuracy"], "precision": summary.get("precision"),
        "val_clean_accuracy": result["clean_accuracy"],
        "val_mean_corruption_accuracy": result["mean_corruption_accuracy"],
        "val_mean_corruption_accuracy_original_10": result.get("mean_corruption_accuracy_original_10"),
        "corruptions": {key: cells["mean"] for key, cells in result["corruptions"].items()},
        "host": outputs.hardware()["cpu"],
    }


def differing(rows):
    """The dotted settings whose values differ between the rows' candidates, sorted."""
    settings = [row["settings"] for row in rows]
    keys = sorted({key for s in settings for key in s})
    return [key for key in keys if len({json.dumps(s.get(key)) for s in settings}) > 1]


def markdown(rows):
    differ = differing(rows)
    corruptions = list(rows[0]["corruptions"]) if rows else []
    head = ["candidate", *differ, "epochs", "training", "val (no TTA, training)", "val clean", "val corrupted"]
    lines = ["# Tuning the robust model on val", "",
             "Written by `studies/robust/robust_tune.py`; do not edit by hand. The first "
             f"{rows[0]['val_images'] if rows else 0:,} val images, corrupted as the robustness stage corrupts "
             "test images; each model with its registry entry's test-time augmentation.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([
            row["label"], *(json.dumps(row["settings"].get(key)) for key in differ), str(row["epochs"]),
            f"{row['wall_time_s'] / 60:.1f} min", f"{row['best_val_accuracy']:.2%}", f"{row['val_clean_accuracy']:.2%}",
            f"{row['val_mean_corruption_accuracy']:.2%}"]) + " |")
    lines += ["", "Mean val accuracy per corruption (over severities 1-5):", "",
              "| candidate | " + " | ".join(c.replace("_", " ") for c in corruptions) + " |",
              "|" + "---|" * (len(corruptions) + 1)]
    for row in rows:
        lines.append(f"| {row['label']} | " + " | ".join(f"{row['corruptions'][c]:.1%}" for c in corruptions) + " |")
    hosts = sorted({row["host"] for row in rows})
    lines += ["", f"Host: {', '.join(hosts)}. Training times compare only within one host.", ""]
    return "\n".join(lines)


def candidate_parser(description, out):
    """The command line of a tuning tool: --candidate LABEL FOLDER (repeated), --data, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--candidate", nargs=2, action="append", required=True, metavar=("LABEL", "FOLDER"),
                        help="a folder with NAME.keras, NAME.json (its training metrics) and params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/cifar10.npz"))
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser


def tune(candidates, out, data_path, measure, describe, to_markdown, header=None):
    """Measure each (label, folder) of `candidates` with `measure(label, folder, arrays)` -> row,
    unless `out`/tuning.json has its label for the same model file; write tuning.json ({**header,
    "rows"}) after each and tuning.md (`to_markdown(rows)`) at the end. Every folder is checked
    before the first is measured."""
    for _, folder in candidates:
        candidate_files(folder)
    table = out / "tuning.json"
    rows = {row["label"]: row for row in (json.loads(table.read_text())["rows"] if table.is_file() else [])}
    arrays = data.load_prepared(data_path)
    for label, folder in candidates:
        if label in rows and rows[label]["model_sha256"] == digest(candidate_files(folder)[1]):
            print(f"{label}: measured already ({table})")
            continue
        rows[label] = measure(label, folder, arrays)
        print(f"{label}: {describe(rows[label])}", flush=True)
        outputs.write_json(table, {**(header or {}), "rows": list(rows.values())})
    with outputs.atomic_path(out / "tuning.md") as tmp:
        tmp.write_text(to_markdown(list(rows.values())))
    print(f"Wrote {table} and {out / 'tuning.md'}")


def main():
    parser = candidate_parser(__doc__.splitlines()[0], "studies/robust")
    parser.add_argument("--images", type=int, default=1000, help="val images to corrupt (the stage's robustness.images)")
    args = parser.parse_args()
    import robustness

    loaded = params.load(["shared", "robustness"], schemas={"robustness": robustness.SCHEMA})
    cfg = {**loaded["robustness"], "images": args.images}
    tune(args.candidate, args.out, args.data,
         lambda label, folder, arrays: measure_candidate(label, folder, arrays, cfg, loaded["shared"]["seed"]),
         lambda row: (f"val clean {row['val_clean_accuracy']:.2%}, corrupted {row['val_mean_corruption_accuracy']:.2%} "
                      f"({row['val_images']:,} val images, {len(row['corruptions'])} corruptions)"),
         markdown, {"corruptions": cfg["corruptions"]})


if __name__ == "__main__":
    outputs.run_stage("robust_tune", main, errors=(ValueError, FileNotFoundError))
