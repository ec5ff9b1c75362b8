"""Stage `evaluate`: measure every model of the registry on the training and test sets, compare them.

Usage: python scripts/evaluate.py --data data/prepared/cifar10.npz --models models/trained \
           --live reports/live --train-metrics reports/metrics/train \
           --metrics reports/metrics/evaluate.json --plots reports/eval \
           --figures reports/figures/evaluate --summary reports/summary.md

The models are the registry's (params.yaml `models`): NAME is read from models/trained/NAME.keras,
reports/live/NAME/ (its training stage's DVCLive log) and reports/metrics/train/NAME.json. For each: loss and accuracy on the
training and test sets (printed in percent, as the seed did), scikit-learn's per-class
precision/recall/F1, the confusion matrix (DVC plot data and a heatmap), per-class accuracy,
the seed's training-curve figure and a gallery of misclassified test images. Across models:
reports/summary.md and a chart of test accuracy against training time.
"""

import argparse
import contextlib
import csv
from pathlib import Path

import numpy as np

from cifar import data, evaluation, models, outputs, params, spread, training

TRAIN_KEYS = ("params", "best_val_accuracy", "best_epoch", "epochs_run", "wall_time_s", "train_img_per_s")
PLOT_DIRS = ("confusion", "per_class", "reliability")  # the training curves are DVCLive's (reports/live/NAME/)
class SCHEMA(params.Section):  # params.yaml `evaluate`
    batch_size: params.number(int, 1, 65_536)
    misclassified_images: params.number(int, 0, 120)
    calibration_bins: params.number(int, 2, 100)
    train_images: params.number(int, 0, 1_000_000)


def evaluate_model(name, model, arrays, names, batch_size, bins, train_images=0):
    """`train_images`: the train accuracy is measured on the first N training images (0: all). The
    prepared split is shuffled, so they are a random sample; the accuracy is there to show the
    gap to test, which 10,000 images measure to about +-0.2 points."""
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
    """The stage: every input checked before the slow part, then each model measured and its plot
    data, figures and summary rows written, all swapped in together (long: one transaction)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, help="folder of NAME.keras")
    parser.add_argument("--live", required=True, type=Path, help="folder of the training stages' DVCLive logs (NAME/)")
    parser.add_argument("--train-metrics", required=True, type=Path, help="folder of NAME.json")
    parser.add_argument("--robustness", required=True, type=Path, help="the robustness stage's metrics (JSON)")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--plots", required=True, type=Path, help="folder for the DVC plot data")
    parser.add_argument("--figures", required=True, type=Path)
    parser.add_argument("--charts", required=True, type=Path,
                        help="folder for the git-tracked charts (accuracy against time, robustness)")
    parser.add_argument("--summary", required=True, type=Path)
    args = parser.parse_args()
    loaded_params = params.load(["models", "evaluate"], schemas={"evaluate": SCHEMA})
    registry, cfg = loaded_params["models"], loaded_params["evaluate"]

    # Every input is checked before the slow part starts.
    for path in (args.metrics, args.summary):
        outputs.check_output(path)
    loaded = {name: models.load(args.models / f"{name}.keras", entry["tta"], models.train_stage(name))
              for name, entry in registry.items()}
    trained, histories = {}, {}
    for name, entry in registry.items():
        trained[name] = outputs.read_json(
            args.train_metrics / f"{name}.json", models.train_stage(name),
            needs=[f"{name}.{k}" for k in TRAIN_KEYS])[name]
        histories[name] = read_history(args.live / name, models.train_stage(name))
    robustness = outputs.read_json(args.robustness, "robustness", needs=["data.test_images", *[
        f"{name}.{key}" for name in registry for key in ("clean_accuracy", "mean_corruption_accuracy", "corruptions")]])
    arrays = data.load_prepared(args.data)
    names = [str(n) for n in arrays["class_names"]]
    results, summary_rows = {}, []
    with outputs.atomic_path(args.figures, is_dir=True) as figures:
        figures.mkdir(parents=True, exist_ok=True)
        plot_dirs = {}
        with contextlib.ExitStack() as stack:
            for kind in PLOT_DIRS:
                plot_dirs[kind] = stack.enter_context(outputs.atomic_path(args.plots / kind, is_dir=True))
                plot_dirs[kind].mkdir(parents=True, exist_ok=True)
            for name, model in loaded.items():
                label = registry[name]["label"]
                metrics, predicted, probabilities, matrix = evaluate_model(
                    name, model, arrays, names, cfg["batch_size"], cfg["calibration_bins"], cfg["train_images"])
                low, high = spread.single_run_interval(metrics["test"]["accuracy"], len(arrays["y_test"]))
                metrics["test"]["single_run_95_interval"] = {"low": low, "high": high}  # Wilson's
                results[name] = metrics
                history = histories[name]  # epochs 1-based
                write_plot_data(plot_dirs, name, arrays["y_test"], predicted, names, metrics)
                calibrated = metrics["calibration"]
                bins = evaluation.calibration_bins(probabilities, arrays["y_test"], cfg["calibration_bins"])
                scaled = evaluation.calibration_bins(
                    evaluation.temperature_scaled(probabilities, calibrated["temperature"]), arrays["y_test"],
                    cfg["calibration_bins"])
                evaluation.write_rows(plot_dirs["reliability"] / f"{name}.csv", ["confidence", "accuracy", "count"],
                                      [(round(b["confidence"], 4), round(b["accuracy"], 4), b["count"]) for b in bins])
                evaluation.save_figure(
                    evaluation.reliability_diagram(bins, scaled, label, calibrated["ece"],
                                                   calibrated["ece_temperature_scaled"], calibrated["temperature"],
                                                   cfg["calibration_bins"]),
                    figures / f"{name}_reliability.png")
                evaluation.save_figure(evaluation.training_curves(history, f"{label}: training curves"),
                                       figures / f"{name}_training_curves.png")
                evaluation.save_figure(
                    evaluation.confusion_heatmap(matrix, names, f"{label}: confusion matrix (test set)"),
                    figures / f"{name}_confusion_matrix.png")
                evaluation.save_figure(
                    evaluation.misclassified_gallery(arrays["x_test"], arrays["y_test"], predicted, probabilities,
                                                     names, cfg["misclassified_images"], label),
                    figures / f"{name}_misclassified.png")

                summary_rows.append({
                    "model": name, "label": label, "test_accuracy": metrics["test"]["accuracy"],
                    "train_accuracy": metrics["train"]["accuracy"], "test_loss": metrics["test"]["loss"],
                    "train_loss": metrics["train"]["loss"],
                    "ece": calibrated["ece"], "nll": calibrated["nll"], "temperature": calibrated["temperature"],
                    "ece_temperature_scaled": calibrated["ece_temperature_scaled"],
                    "clean_subset_accuracy": robustness[name]["clean_accuracy"],
                    "mean_corruption_accuracy": robustness[name]["mean_corruption_accuracy"],
                    "size_mb": (args.models / f"{name}.keras").stat().st_size / 1e6,
                    **{k: trained[name][k] for k in TRAIN_KEYS},
                })
    with outputs.atomic_path(args.charts, is_dir=True) as charts:
        charts.mkdir(parents=True, exist_ok=True)
        evaluation.save_chart(evaluation.accuracy_against_time(summary_rows), charts / "accuracy_vs_training_time.png")
        evaluation.save_chart(evaluation.robustness_against_severity(summary_rows, robustness), charts / "robustness.png")
    evaluation.write_rows(args.plots / "accuracy_vs_time.csv", ["model", "train_minutes", "test_accuracy"],
                          [(r["model"], round(r["wall_time_s"] / 60, 2), round(r["test_accuracy"], 4))
                           for r in summary_rows])

    outputs.write_json(args.metrics, {
        **results,
        "data": {"archive_sha256": str(arrays["archive_sha256"]), "test_images": int(len(arrays["y_test"]))},
        "environment": outputs.hardware(),
    })
    with outputs.atomic_path(args.summary) as tmp:
        tmp.write_text(
            "# Model comparison\n\n"
            "Written by the `evaluate` stage from `reports/metrics/`; do not edit by hand.\n"
            f"Test set: {len(arrays['y_test']):,} images; training set: {len(arrays['y_train']):,} images, "
            f"train accuracy measured on {len(arrays['y_train'][:cfg['train_images'] or None]):,} of them "
            f"(archive sha256 `{str(arrays['archive_sha256'])[:12]}...`).\n\n"
            + evaluation.summary_markdown(summary_rows)
            + "\n## One run, and the spread over seeds\n\n"
            + spread_markdown(summary_rows, results, len(arrays["y_test"]))
            + "\n## Robustness and calibration\n\n"
            + evaluation.quality_markdown(summary_rows, robustness["data"]["test_images"],
                                          len(robustness[summary_rows[0]["model"]]["corruptions"]))
            + f"\n![test accuracy against training time]({chart_link(args.charts, args.summary, 'accuracy_vs_training_time.png')})\n"
            + f"\n![accuracy on corrupted test images]({chart_link(args.charts, args.summary, 'robustness.png')})\n"
        )
    print(f"Wrote {args.metrics}, {args.plots}/, {args.figures}/ and {args.summary}")


def spread_markdown(rows, results, images):
    """Each model's test accuracy as one run, with its 95% binomial interval on `images` test
    images; the spread over seeds is a study's (make seeds), linked, not read: no stage depends on
    a study."""
    lines = ["| model | this run | 95% interval, one run |", "|---|---|---|"]
    for r in rows:
        interval = results[r["model"]]["test"]["single_run_95_interval"]
        lines.append(f"| {r['label']} | {r['test_accuracy']:.2%} | {interval['low']:.2%} – {interval['high']:.2%} |")
    return ("\n".join(lines) + f"\n\nThe interval is Wilson's for one run on {images:,} test images. The spread over "
            "seeds of the same model on the same split is a study, kept apart from the pipeline: "
            "[studies/seeds/seeds.md](studies/seeds/seeds.md) (`make seeds`); the README's results table shows it "
            "beside the run it includes (`make readme`).\n")


def read_history(folder, stage):
    """A model's per-epoch history from its training stage's DVCLive log (`folder`/plots/metrics:
    train/ and eval/ TSVs, step = epoch - 1), as rows of epoch, loss, accuracy, val_loss,
    val_accuracy and lr; NaN where an epoch had no validation pass. An error names the folder
    and its stage if the log is missing or damaged."""
    import math

    metrics = Path(folder) / "plots" / "metrics"
    columns = {"loss": "train/loss", "accuracy": "train/accuracy", "lr": "train/learning_rate",
               "val_loss": "eval/loss", "val_accuracy": "eval/accuracy"}
    series = {}
    try:
        for key, rel in columns.items():
            with open(metrics / f"{rel}.tsv", newline="") as f:
                series[key] = {int(row["step"]): float(row[rel.split("/")[1]]) for row in csv.DictReader(f, delimiter="\t")}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err.filename} not found: the DVCLive log is written by the '{stage}' stage; "
                                f"run `dvc repro {stage}`") from None
    except (KeyError, ValueError, TypeError, csv.Error) as err:
        raise outputs.StageError(f"{metrics} is not a DVCLive log ({type(err).__name__}: {err}); it is written by the "
                                 f"'{stage}' stage: run `dvc repro --force {stage}`") from None
    if not series["loss"]:
        raise outputs.StageError(f"{metrics} has no epochs; it is written by the '{stage}' stage: "
                                 f"run `dvc repro --force {stage}`")
    return [{"epoch": step + 1, **{key: values.get(step, math.nan) for key, values in series.items()}}
            for step in sorted(series["loss"])]


def chart_link(charts, summary, name):
    """The chart's path relative to the summary's folder, as Markdown links it."""
    import os

    return Path(os.path.relpath(charts / name, summary.parent)).as_posix()


def write_plot_data(dirs, name, y_true, predicted, names, metrics):
    """NAME.csv in each DVC plot folder: confusion pairs, per-class accuracy."""
    evaluation.write_predictions(dirs["confusion"] / f"{name}.csv", y_true, predicted, names)
    evaluation.write_rows(dirs["per_class"] / f"{name}.csv", ["class", "accuracy"],
                          [(n, round(metrics["per_class"][n]["accuracy"], 4)) for n in names])


if __name__ == "__main__":
    outputs.run_stage("evaluate", main, errors=(ValueError,))
