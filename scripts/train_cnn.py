"""Stage `train_cnn`: train the seed's CNN on the prepared data, resumable after interruption.

Usage: python scripts/train_cnn.py --data data/prepared/cifar10.npz --model models/cnn.keras \
           --history reports/history/cnn.csv --metrics reports/metrics/train_cnn.json \
           --state models/.resume

Reads `shared` (seed, augment, train) and `train_cnn` (the architecture). Writes the model with
the best val_accuracy, the per-epoch history and the training metrics. If a previous run was
killed, rerunning continues from its last finished epoch.
"""

from cifar import models, params, stage


def main():
    args = stage.arguments(__doc__.splitlines()[0]).parse_args()
    cfg = params.load(["shared", "train_cnn"])
    arch = cfg["train_cnn"]
    stage.run(
        "cnn",
        lambda: models.build_cnn(arch["filters"], arch["kernel_size"], arch["block_dropout"],
                                 arch["dense_units"], arch["dense_dropout"]),
        args, cfg, provenance={},
    )


if __name__ == "__main__":
    stage.main("train_cnn", main)
