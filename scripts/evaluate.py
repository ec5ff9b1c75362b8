"""Stage `evaluate`: measure each trained model on the training and test sets, and compare them.

Usage: python scripts/evaluate.py --data data/prepared/cifar10.npz \
           --models models/cnn.keras models/mobilenet.keras \
           --train-metrics reports/metrics/train_cnn.json reports/metrics/finetune_mobilenet.json \
           --histories reports/history/cnn.csv reports/history/mobilenet.csv \
           --metrics reports/metrics/evaluate.json --tables reports/eval \
           --figures reports/figures/evaluate --summary reports/summary.md

For each model: loss and accuracy on the training and test sets (printed in percent, as the
seed did), scikit-learn's per-class precision/recall/F1, the confusion matrix (as DVC plot data
and a heatmap), per-class accuracy, the seed's training-curve figure and a gallery of
misclassified test images. reports/summary.md compares the models; the stage writes it.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cifar import data, evaluation, outputs, params, training

# Which stage makes each model, for error messages.
MADE_BY = {"cnn": "train_cnn", "mobilenet": "finetune_mobilenet"}


def evaluate_model(name, model, arrays, names, batch_size):
    train_loss, train_acc = evaluation.loss_and_accuracy(model, arrays["x_train"], arrays["y_train"], batch_size)
    test_loss, test_acc = evaluation.loss_and_accuracy(model, arrays["x_test"], arrays["y_test"], batch_size)
    print(f"{name}: train accuracy {train_acc * 100:.2f}% (loss {train_loss:.4f}), "
          f"test accuracy {test_acc * 100:.2f}% (loss {test_loss:.4f})")
    probabilities = model.predict(arrays["x_test"].astype(np.float32), batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    report, matrix, class_accuracy = evaluation.per_class_report(arrays["y_test"], predicted, names)
    metrics = {
        "train": {"loss": train_loss, "accuracy": train_acc},
        "test": {"loss": test_loss, "accuracy": test_acc},
        "macro_f1": report["macro avg"]["f1-score"],
        "per_class": {
            n: {"precision": report[n]["precision"], "recall": report[n]["recall"],
                "f1": report[n]["f1-score"], "accuracy": class_accuracy[n]}
            for n in names
        },
    }
    return metrics, predicted, probabilities, matrix


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, nargs="+")
    parser.add_argument("--train-metrics", required=True, type=Path, nargs="+")
    parser.add_argument("--histories", required=True, type=Path, nargs="+")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--tables", required=True, type=Path)
    parser.add_argument("--figures", required=True, type=Path)
    parser.add_argument("--summary", required=True, type=Path)
    args = parser.parse_args()
    if not len(args.models) == len(args.train_metrics) == len(args.histories):
        parser.error("--models, --train-metrics and --histories need one entry per model, in the same order")
    cfg = params.load(["evaluate"])["evaluate"]

    # Every input is checked before the slow part starts.
    loaded = [evaluation.load_model(path, MADE_BY.get(path.stem, "the training")) for path in args.models]
    for path, metrics_path, history_path in zip(args.models, args.train_metrics, args.histories):
        stage = MADE_BY.get(path.stem, "the training")
        for needed in (metrics_path, history_path):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} not found: it is written by the '{stage}' stage")
    arrays = data.load_prepared(args.data)
    names = [str(n) for n in arrays["class_names"]]
    results, summary_rows, class_rows = {}, [], {n: [n] for n in names}
    with outputs.atomic_path(args.tables, is_dir=True) as tables, \
            outputs.atomic_path(args.figures, is_dir=True) as figures:
        for model, model_path, train_metrics_path, history_path in zip(
                loaded, args.models, args.train_metrics, args.histories):
            name = model_path.stem
            metrics, predicted, probabilities, matrix = evaluate_model(
                name, model, arrays, names, cfg["batch_size"])
            results[name] = metrics
            for n in names:
                class_rows[n].append(round(metrics["per_class"][n]["accuracy"], 4))

            evaluation.write_predictions(tables / f"{name}_predictions.csv", arrays["y_test"], predicted, names)
            history = training.read_history(history_path)  # epochs 1-based, as written
            evaluation.save_figure(evaluation.training_curves(history, f"{name}: training curves"),
                                   figures / f"{name}_training_curves.png")
            evaluation.save_figure(evaluation.confusion_heatmap(matrix, names, f"{name}: confusion matrix (test set)"),
                                   figures / f"{name}_confusion_matrix.png")
            evaluation.save_figure(
                evaluation.misclassified_gallery(arrays["x_test"], arrays["y_test"], predicted, probabilities,
                                                 names, cfg["misclassified_images"], name),
                figures / f"{name}_misclassified.png")

            trained = json.loads(train_metrics_path.read_text())[name]
            summary_rows.append({
                "model": name, "test_accuracy": metrics["test"]["accuracy"],
                "train_accuracy": metrics["train"]["accuracy"], "test_loss": metrics["test"]["loss"],
                "train_loss": metrics["train"]["loss"], "size_mb": model_path.stat().st_size / 1e6,
                **{k: trained[k] for k in ("params", "best_val_accuracy", "best_epoch", "epochs_run",
                                           "wall_time_s", "train_img_per_s")},
            })
        evaluation.write_rows(tables / "per_class_accuracy.csv", ["class", *results], class_rows.values())

    outputs.write_json(args.metrics, {
        **results,
        "data": {"archive_sha256": str(arrays["archive_sha256"]), "test_images": int(len(arrays["y_test"]))},
        "environment": outputs.hardware(),
    })
    with outputs.atomic_path(args.summary) as tmp:
        tmp.write_text(
            "# Model comparison\n\n"
            "Written by the `evaluate` stage from `reports/metrics/*.json`; do not edit by hand.\n"
            f"Test set: {len(arrays['y_test']):,} images; training set: {len(arrays['y_train']):,} images "
            f"(archive sha256 `{str(arrays['archive_sha256'])[:12]}...`).\n\n"
            + evaluation.summary_markdown(summary_rows)
        )
    print(f"Wrote {args.metrics}, {args.tables}/, {args.figures}/ and {args.summary}")


if __name__ == "__main__":
    try:
        main()
    except (outputs.StageError, FileNotFoundError, ValueError) as err:
        sys.exit(f"evaluate: error: {err}")
