"""Stage `compare`: the models side by side, from their own stages' metrics only (seconds).

Usage: python scripts/compare.py --train-metrics reports/metrics/train \
           --evaluate reports/metrics/evaluate --robustness reports/metrics/robustness \
           --summary reports/summary.md --charts reports/charts --plot reports/eval/accuracy_vs_time.csv

Writes reports/summary.md, the git-tracked charts (accuracy against training time and against
corruption severity) and DVC's accuracy-against-time plot data."""

import argparse
import os
from pathlib import Path

from cifar import evaluation, outputs, params

TRAIN_KEYS = ("params", "best_val_accuracy", "best_epoch", "epochs_run", "wall_time_s", "train_img_per_s")


def rows_of(registry, trained, evaluated, robustness):
    """One summary row per model, in the registry's order."""
    rows = []
    for name, entry in registry.items():
        metrics, calibrated = evaluated[name], evaluated[name]["calibration"]
        rows.append({
            "model": name, "label": entry["label"], "test_accuracy": metrics["test"]["accuracy"],
            "train_accuracy": metrics["train"]["accuracy"], "test_loss": metrics["test"]["loss"],
            "train_loss": metrics["train"]["loss"], "size_mb": metrics["size_mb"],
            "ece": calibrated["ece"], "nll": calibrated["nll"], "temperature": calibrated["temperature"],
            "ece_temperature_scaled": calibrated["ece_temperature_scaled"],
            "clean_subset_accuracy": robustness[name]["clean_accuracy"],
            "mean_corruption_accuracy": robustness[name]["mean_corruption_accuracy"],
            "interval": metrics["test"]["single_run_95_interval"],
            **{k: trained[name][k] for k in TRAIN_KEYS},
        })
    return rows


def spread_markdown(rows, images):
    """Each model's test accuracy as one run, with its 95% binomial interval on `images` test
    images; the spread over seeds is a study's (make seeds), linked, not read: no stage depends on
    a study."""
    lines = ["| model | this run | 95% interval, one run |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['test_accuracy']:.2%} | {r['interval']['low']:.2%} – {r['interval']['high']:.2%} |")
    return ("\n".join(lines) + f"\n\nThe interval is Wilson's for one run on {images:,} test images. The spread over "
            "seeds of the same model on the same split is a study, kept apart from the pipeline: "
            "[studies/seeds/seeds.md](../studies/seeds/seeds.md) (`make seeds`); the README's results table shows it "
            "beside the run it includes (`make readme`).\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-metrics", required=True, type=Path, help="folder of train@NAME's NAME.json")
    parser.add_argument("--evaluate", required=True, type=Path, help="folder of evaluate@NAME's NAME.json")
    parser.add_argument("--robustness", required=True, type=Path, help="folder of robustness@NAME's NAME.json")
    parser.add_argument("--summary", required=True, type=Path)
    parser.add_argument("--charts", required=True, type=Path, help="folder for the git-tracked charts")
    parser.add_argument("--plot", required=True, type=Path, help="the DVC plot data of accuracy against time (CSV)")
    args = parser.parse_args()
    registry = params.load(["models"])["models"]
    trained = outputs.read_models(args.train_metrics, registry, "train", TRAIN_KEYS)
    evaluated = outputs.read_models(args.evaluate, registry, "evaluate", ("test", "train", "calibration", "size_mb"))
    robustness = outputs.read_models(args.robustness, registry, "robustness",
                                     ("clean_accuracy", "mean_corruption_accuracy", "corruptions"))
    rows = rows_of(registry, trained, evaluated, robustness)
    counts = evaluated["data"]

    evaluation.save_figure(evaluation.accuracy_against_time(rows), args.charts / "accuracy_vs_training_time.png", dpi=72)
    evaluation.save_figure(evaluation.robustness_against_severity(rows, robustness), args.charts / "robustness.png",
                           dpi=72)  # git-tracked charts: a few tens of KB
    evaluation.write_rows(args.plot, ["model", "train_minutes", "test_accuracy"],
                          [(r["model"], round(r["wall_time_s"] / 60, 2), round(r["test_accuracy"], 4)) for r in rows])

    def chart(name):
        return Path(os.path.relpath(args.charts / name, args.summary.parent)).as_posix()

    first = evaluated[rows[0]["model"]]
    with outputs.atomic_path(args.summary) as tmp:
        tmp.write_text(
            "# Model comparison\n\n"
            "Written by the `compare` stage from `reports/metrics/`; do not edit by hand.\n"
            f"Test set: {counts['test_images']:,} images; training set: {counts['train_images']:,} images, "
            f"train accuracy measured on {first['train']['images']:,} of them "
            f"(archive sha256 `{counts['archive_sha256'][:12]}...`).\n\n"
            + evaluation.summary_markdown(rows)
            + "\n## One run, and the spread over seeds\n\n"
            + spread_markdown(rows, counts["test_images"])
            + "\n## Robustness and calibration\n\n"
            + evaluation.quality_markdown(rows, robustness["data"]["test_images"],
                                          len(robustness[rows[0]["model"]]["corruptions"]))
            + f"\n![test accuracy against training time]({chart('accuracy_vs_training_time.png')})\n"
            + f"\n![accuracy on corrupted test images]({chart('robustness.png')})\n"
        )
    print(f"Wrote {args.summary}, {args.charts}/ and {args.plot}")


if __name__ == "__main__":
    outputs.run_stage("compare", main, errors=(ValueError,))
