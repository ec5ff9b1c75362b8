"""Stage `train_cnn`: train a CNN of the model registry on the prepared data, resumable.

Usage: python scripts/train_cnn.py --name cnn --data data/prepared/cifar10.npz \
           --model models/trained/cnn.keras --history reports/history/cnn.csv \
           --metrics reports/metrics/train/cnn.json --state models/.resume

`--name` picks the registry entry (params.yaml `models`): its builder and params section make
the model; `shared` (seed, augment, train) sets the training, unless the section has a `train`
recipe and an `augment` policy of its own (the fast model's). The seed's CNN is `cnn`; any model
whose builder needs nothing but its params section trains with this script too. Writes the
model with the best val_accuracy, the per-epoch history and the training metrics. If a previous
run was killed, rerunning continues from its last finished epoch.
"""

from cifar import models, params, stage


def main():
    parser = stage.arguments(__doc__.splitlines()[0])
    parser.add_argument("--name", default="cnn", help="the model's name in the registry (default: cnn)")
    args = parser.parse_args()
    entry, section = params.model_entry(args.name)
    cfg = params.load(["shared", entry["params"]])
    # A section with its own `train` recipe and `augment` policy uses them instead of shared's.
    stage.run(
        args.name,
        lambda arrays: models.build(entry["builder"], section, entry["params"], images=arrays["x_train"]),
        args, {**cfg, "registry": entry}, provenance={},
        train=section.get("train"), augment=section.get("augment"),
    )


if __name__ == "__main__":
    stage.main("train_cnn", main)
