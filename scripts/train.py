"""Stage `train@NAME`: train the registry's model NAME on the prepared data, resumable.

Usage: python scripts/train.py --name cnn --data data/prepared/cifar10.npz --weights models/pretrained/cnn \
           --model models/trained/cnn.keras --metrics reports/metrics/train/cnn.json \
           --live reports/live/cnn --state models/.resume

Builds the model from its module and settings, trains it by its plan (cifar.stage), and writes
the best model by val accuracy, the DVCLive log and the metrics; a killed run continues from its
last finished epoch."""

from cifar import stage

if __name__ == "__main__":
    import sys

    name = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv[:-1] else "NAME"
    stage.main(f"train@{name}", lambda: stage.train(__doc__.splitlines()[0]))
