"""Stage `evaluate@NAME`: one model of the registry on the training, val and test sets.

Usage: python scripts/evaluate.py --name NAME --data data/prepared/cifar10.npz \
           --model models/trained/NAME.keras --live reports/live/NAME \
           --metrics reports/metrics/evaluate/NAME.json --plots reports/eval \
           --figures reports/figures/evaluate/NAME

Loss and accuracy (train and test), per-class precision/recall/F1, calibration (ECE, NLL, the
temperature fitted on val), the confusion matrix, the seed's training curves (from the DVCLive
log) and misclassified test images. Comparing models is the `compare` stage's."""

import argparse
from pathlib import Path

from cifar import data, evaluation, models, outputs, params, spread
from cifar.training import read_history

PLOT_DIRS = ("confusion", "per_class", "reliability")  # the training curves are DVCLive's (reports/live/NAME/)
class SCHEMA(params.Section):  # params.yaml `evaluate`
    batch_size: params.number(int, 1, 65_536)
    misclassified_images: params.number(int, 0, 120)
    calibration_bins: params.number(int, 2, 100)
    train_images: params.number(int, 0, 1_000_000)


def evaluate_model(name, model, arrays, names, batch_size, bins, train_images=0):
    """(metrics, predicted, probabilities, confusion matrix); the train accuracy on the first
    `train_images` (0: all; a random sample of the shuffled split), to show the gap to test."""
    def predict(x):
        return evaluation.predict(model, x, batch_size)

    seen = slice(0, train_images or None)
    train_loss, train_acc = evaluation.loss_and_accuracy(model, arrays["x_train"][seen], arrays["y_train"][seen], batch_size)
    probabilities = predict(arrays["x_test"])
    test_loss, test_acc = evaluation.loss_and_accuracy_of(probabilities, arrays["y_test"])
    calibration = evaluation.calibration(predict(arrays["x_val"]), arrays["y_val"], probabilities, arrays["y_test"], bins)
    print(f"{name}: train accuracy {train_acc * 100:.2f}% (loss {train_loss:.4f}), "
          f"test accuracy {test_acc * 100:.2f}% (loss {test_loss:.4f}); ECE {calibration['ece']:.2%}, "
          f"{calibration['ece_temperature_scaled']:.2%} at temperature {calibration['temperature']:.2f} (fitted on val)")
    predicted = probabilities.argmax(axis=1)
    report, matrix, class_accuracy = evaluation.per_class_report(arrays["y_test"], predicted, names)
    metrics = {
        "train": {"loss": train_loss, "accuracy": train_acc, "images": len(arrays["y_train"][seen])},
        "test": {"loss": test_loss, "accuracy": test_acc},
        "macro_f1": report["macro avg"]["f1-score"],
        "calibration": calibration,
        "per_class": {
            n: {"precision": report[n]["precision"], "recall": report[n]["recall"],
                "f1": report[n]["f1-score"], "accuracy": class_accuracy[n]}
            for n in names
        },
    }
    return metrics, predicted, probabilities, matrix


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml `models`)")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path, help="the trained model (.keras)")
    parser.add_argument("--live", required=True, type=Path, help="the model's DVCLive log (its training stage's)")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--plots", required=True, type=Path,
                        help="folder of the DVC plot data: writes KIND/NAME.csv for " + ", ".join(PLOT_DIRS))
    parser.add_argument("--figures", required=True, type=Path, help="folder for the model's figures")
    args = parser.parse_args()
    cfg = params.load(["evaluate"], schemas={"evaluate": SCHEMA})["evaluate"]
    name, stage = args.name, models.train_stage(args.name)
    entry = models.entry(name)[0]
    label = entry["label"]

    # Every input is checked before the slow part starts.
    model = models.load(args.model, entry["tta"], stage)
    history = read_history(args.live, stage)  # epochs 1-based
    arrays = data.load_prepared(args.data)
    names = [str(n) for n in arrays["class_names"]]
    bins_count = cfg["calibration_bins"]
    metrics, predicted, probabilities, matrix = evaluate_model(
        name, model, arrays, names, cfg["batch_size"], bins_count, cfg["train_images"])
    low, high = spread.single_run_interval(metrics["test"]["accuracy"], len(arrays["y_test"]))
    metrics["test"]["single_run_95_interval"] = {"low": low, "high": high}  # Wilson's
    metrics["size_mb"] = args.model.stat().st_size / 1e6

    evaluation.write_rows(args.plots / "confusion" / f"{name}.csv", ["actual", "predicted"],  # DVC's confusion template
                          [(names[t], names[p]) for t, p in zip(arrays["y_test"], predicted)])
    evaluation.write_rows(args.plots / "per_class" / f"{name}.csv", ["class", "accuracy"],
                          [(n, round(metrics["per_class"][n]["accuracy"], 4)) for n in names])
    calibrated = metrics["calibration"]
    bins = evaluation.calibration_bins(probabilities, arrays["y_test"], bins_count)
    scaled = evaluation.calibration_bins(
        evaluation.temperature_scaled(probabilities, calibrated["temperature"]), arrays["y_test"], bins_count)
    evaluation.write_rows(args.plots / "reliability" / f"{name}.csv", ["confidence", "accuracy", "count"],
                          [(round(b["confidence"], 4), round(b["accuracy"], 4), b["count"]) for b in bins])
    figures = args.figures
    evaluation.save_figure(evaluation.reliability_diagram(bins, scaled, label, calibrated["ece"],
                                                          calibrated["ece_temperature_scaled"],
                                                          calibrated["temperature"], bins_count),
                           figures / "reliability.png")
    evaluation.save_figure(evaluation.training_curves(history, f"{label}: training curves"),
                           figures / "training_curves.png")
    evaluation.save_figure(evaluation.confusion_heatmap(matrix, names, f"{label}: confusion matrix (test set)"),
                           figures / "confusion_matrix.png")
    evaluation.save_figure(evaluation.misclassified_gallery(arrays["x_test"], arrays["y_test"], predicted,
                                                            probabilities, names, cfg["misclassified_images"], label),
                           figures / "misclassified.png")
    outputs.write_json(args.metrics, {
        name: metrics,
        "data": {"archive_sha256": str(arrays["archive_sha256"]), "test_images": int(len(arrays["y_test"])),
                 "train_images": int(len(arrays["y_train"]))},
        "environment": outputs.hardware(),
        "stage_s": outputs.stage_seconds(),
    })
    print(f"Wrote {args.metrics}, {args.plots}/*/{name}.csv and {args.figures}/")


if __name__ == "__main__":
    outputs.run_stage("evaluate", main, errors=(ValueError,))
