"""Stage `train_cnn`: train the seed's CNN (registry entry `cnn`) on the prepared data, resumable.

Usage: python scripts/train_cnn.py --name cnn --data data/prepared/cifar10.npz \
           --model models/trained/cnn.keras --history reports/history/cnn.csv \
           --metrics reports/metrics/train/cnn.json --live reports/live/cnn --state models/.resume

The model is its module's (params.yaml `models.cnn.module`, cifar.models.cnn), built from its
params section (`train_cnn`) and trained with the seed's settings (`shared`: seed, augment,
train) and recipe. Writes the model with the best val_accuracy, the per-epoch history, the
DVCLive log (as training goes) and the training metrics. If a run was killed, rerunning
continues from its last finished epoch.
"""

from cifar import stage

if __name__ == "__main__":
    stage.main("train_cnn", lambda: stage.train(__doc__.splitlines()[0]))
