"""The spread behind an accuracy claim: a model's seeds (studies/seeds/) and one run's interval. A
spread is shown only while the seed table's run at the pipeline's seed is the current run."""

from __future__ import annotations

import statistics


def spread(values):
    """mean, std (n - 1; 0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def single_run_interval(accuracy, images):
    """Wilson's 95% interval (scipy) of one run's accuracy `accuracy` on `images` test images."""
    from scipy.stats import binomtest

    interval = binomtest(round(accuracy * images), images).proportion_ci(0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def table(runs, test_images, labels):
    """Per model: seeds, the spread of test accuracy and training time, hosts, and the pipeline's run."""
    result = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        own = sorted((r for r in runs if r["model"] == name), key=lambda r: r["seed"])
        accuracy = spread([r["test_accuracy"] for r in own])
        pipeline = next((r for r in own if r["source"].startswith("pipeline")), None)
        result[name] = {
            "label": labels.get(name, name), "runs": len(own), "seeds": [r["seed"] for r in own],
            "test_accuracy": {k: round(v, 5) for k, v in accuracy.items()},
            "wall_time_s": {k: round(v, 1) for k, v in spread([r["wall_time_s"] for r in own]).items()},
            "single_run_95_interval": [round(v, 5) for v in single_run_interval(accuracy["mean"], test_images)],
            "precision": sorted({r["precision"] for r in own}),
            "cpu": sorted({r["cpu"] for r in own if r["cpu"]}),
            "pipeline_run": None if pipeline is None else {
                "seed": pipeline["seed"], "test_accuracy": pipeline["test_accuracy"],
                "wall_time_s": pipeline["wall_time_s"], "model_sha256": pipeline.get("model_sha256")},
        }
    return result


def current(row, test_accuracy, wall_time_s):
    """Whether the seed table's `row` is a spread for the current run: 2+ seeds, the pipeline's among them."""
    run = (row or {}).get("pipeline_run")
    return bool(run) and row.get("runs", 0) > 1 and abs(run["test_accuracy"] - test_accuracy) < 1e-4 and abs(run["wall_time_s"] - wall_time_s) < 0.05


def describe(row):
    """'94.02% ± 0.12% (3 seeds)': a seed table row's test accuracy, for a table cell."""
    acc = row["test_accuracy"]
    return f"{acc['mean']:.2%} ± {acc['std']:.2%} ({row['runs']} seeds)"
