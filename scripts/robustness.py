"""Stage `robustness@NAME`: accuracy of one model of the registry on corrupted test images.

Usage: python scripts/robustness.py --name NAME --data data/prepared/cifar10.npz \
           --model models/export/NAME/NAME_float32.tflite --metrics reports/metrics/robustness/NAME.json \
           --plot reports/eval/robustness/NAME.csv --figure reports/figures/robustness/NAME.png

The model as it ships, the float32 TF-Lite file export@NAME writes (its temperature and test-time
augmentation inside; parity@NAME holds it to Keras): the robustness a user of the artifact gets,
in LiteRT, which runs MobileNetV2 faster than Keras on a CPU. It takes any file cifar.inference loads.
The first `robustness.images` test images, corrupted on the fly by each of `robustness.corruptions`
(cifar.corruptions) at severities 1-5, drawn from `shared.seed` (the same sets for every model).
Metrics: clean, per set, per corruption and the mean over all, each mean with its 95% interval;
accuracy against severity as DVC plot data and a PNG."""

import argparse
from pathlib import Path

import numpy as np

from cifar import corruptions, data, evaluation, inference, models, outputs, params

class SCHEMA(params.Section):  # params.yaml `robustness`
    images: params.number(int, 0, 10_000)
    corruptions: params.names_from(list(corruptions.CORRUPTIONS))
    batch_size: params.number(int, 1, 65_536)


def corrupted_sets(images, names, seed):
    """{(corruption, severity): uint8 images}."""
    return {(name, severity): corruptions.corrupt(images, name, severity, seed)
            for name in names for severity in corruptions.SEVERITIES}


def interval_pp(hits):
    """Half the 95% interval, in points, of the mean of `hits` (images x sets): the images are the
    sample, since an image's share of sets it gets right varies from image to image."""
    per_image = hits.mean(axis=1)
    return float(1.96 * per_image.std(ddof=1) / np.sqrt(len(per_image)) * 100) if len(per_image) > 1 else None


def measure(predict, clean, labels, corrupted):
    """Clean accuracy, each corrupted set's, the per-corruption means and the overall mean, with
    their intervals (`interval_95_pp`); `predict(images)`: probabilities, called once on every set."""
    hits = predict(np.concatenate([clean, *corrupted.values()])).argmax(axis=1).reshape(-1, len(labels)) == labels
    cells = dict(zip(corrupted, hits[1:]))
    names = list(dict.fromkeys(name for name, _ in cells))
    per_corruption = {}
    for name in names:
        table = np.stack([cells[name, s] for s in corruptions.SEVERITIES], axis=1)
        per_corruption[name] = {**{f"severity_{s}": float(cells[name, s].mean()) for s in corruptions.SEVERITIES},
                                "mean": float(table.mean()), "interval_95_pp": interval_pp(table)}
    every = np.stack(list(cells.values()), axis=1)
    original = [value.mean() for (name, _), value in cells.items() if name in corruptions.ORIGINAL_TEN]
    return {
        "clean_accuracy": float(hits[0].mean()),
        "mean_corruption_accuracy": float(every.mean()),
        "mean_corruption_interval_95_pp": interval_pp(every),
        # over the ten corruptions the suite had before it had CIFAR-10-C's fifteen, for continuity
        **({"mean_corruption_accuracy_original_10": float(np.mean(original))}
           if set(corruptions.ORIGINAL_TEN) <= set(names) else {}),
        "corruptions": per_corruption,
    }


def severity_figure(result, title):
    plt = evaluation._figure()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    severities = [0, *corruptions.SEVERITIES]
    for name, cells in result["corruptions"].items():
        ax.plot(severities, [result["clean_accuracy"] * 100] + [cells[f"severity_{s}"] * 100 for s in corruptions.SEVERITIES],
                "o-", label=name.replace("_", " "))
    ax.set(xlabel="severity (0: clean)", ylabel="accuracy (%)", xticks=severities,
           title=f"{title}: accuracy on corrupted test images (mean {result['mean_corruption_accuracy']:.2%})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml `models`)")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path,
                        help="the shipped float32 TF-Lite file (or any file cifar.inference loads)")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--plot", required=True, type=Path, help="the DVC plot data (CSV)")
    parser.add_argument("--figure", required=True, type=Path)
    args = parser.parse_args()
    loaded_params = params.load(["models", "shared", "robustness"], schemas={"robustness": SCHEMA})
    entry, cfg, seed = models.entry(args.name)[0], loaded_params["robustness"], loaded_params["shared"]["seed"]

    if not args.model.exists():
        raise outputs.StageError(f"{args.model} not found: it is written by the 'export@{args.name}' stage; "
                                 f"run `dvc repro export@{args.name}`")
    predictor = inference.load(args.model, entry["tta"])  # a .keras file at its level; an export has its own inside
    arrays = data.load_prepared(args.data)
    count = min(cfg["images"] or len(arrays["y_test"]), len(arrays["y_test"]))
    clean, labels = arrays["x_test"][:count], arrays["y_test"][:count]
    # The same corrupted sets for every model: drawn from shared.seed, whatever the model.
    corrupted = corrupted_sets(clean, cfg["corruptions"], seed)
    result = measure(lambda x: inference.predict_batches(predictor, x, cfg["batch_size"])[0], clean, labels, corrupted)
    print(f"{args.name}: clean {result['clean_accuracy']:.2%}, mean over {len(corrupted)} corrupted sets "
          f"{result['mean_corruption_accuracy']:.2%} ± {result['mean_corruption_interval_95_pp'] or 0:.2f} pp "
          f"(95%, over {count:,} test images)")
    evaluation.write_rows(args.plot, ["corruption", "severity", "accuracy"], [
        (corruption, severity, round(cells[f"severity_{severity}"] if severity else result["clean_accuracy"], 4))
        for corruption, cells in result["corruptions"].items() for severity in (0, *corruptions.SEVERITIES)])
    evaluation.save_figure(severity_figure(result, entry["label"]), args.figure)
    outputs.write_json(args.metrics, {
        args.name: result,
        "data": {"archive_sha256": str(arrays["archive_sha256"]), "test_images": int(count), "seed": seed},
        "environment": outputs.hardware(),
        "stage_s": outputs.stage_seconds(),
    })
    print(f"Wrote {args.metrics}, {args.plot} and {args.figure}")


if __name__ == "__main__":
    outputs.run_stage("robustness", main, errors=(ValueError,))
