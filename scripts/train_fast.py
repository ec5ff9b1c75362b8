"""Stage `train_fast`: train the fast airbench94-style CNN (registry entry `fast`), resumable.

Usage: python scripts/train_fast.py --name fast --data data/prepared/cifar10.npz \
           --model models/trained/fast.keras --history reports/history/fast.csv \
           --metrics reports/metrics/train/fast.json --live reports/live/fast --state models/.resume

The model, its recipe (SGD-Nesterov, lookahead, ...) and its augmentation are its module's
(cifar.models.fast), its settings params.yaml `train_fast`. Writes what train_cnn writes; a
killed run continues from its last finished epoch.
"""

from cifar import stage

if __name__ == "__main__":
    stage.main("train_fast", lambda: stage.train(__doc__.splitlines()[0]))
