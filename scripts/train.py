"""Stage `train@NAME`: train the registry's model NAME on the prepared data, resumable.

Usage: python scripts/train.py --name cnn --data data/prepared/cifar10.npz --weights models/pretrained/cnn \
           --model models/trained/cnn.keras --metrics reports/metrics/train/cnn.json \
           --live reports/live/cnn --state models/.resume

One stage for every model (dvc.yaml: a foreach over params.yaml `models`). The model is its
module's (`models.NAME.module`, scripts/cifar/models/MODULE.py), built from its settings (the
module's section with the model's own laid over it) and trained by its module's plan, else with
the seed's settings (`shared`) and recipe. MobileNetV2 starts from the backbone weights that
`fetch_weights` placed in models/pretrained/NAME. Writes the model with the best val_accuracy, the
DVCLive log (as training goes: `dvc exp show` follows it) and the training metrics. If a run was
killed, rerunning continues from its last finished epoch (cifar.stage).
"""

from cifar import stage

if __name__ == "__main__":
    import sys

    name = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv[:-1] else "NAME"
    stage.main(f"train@{name}", lambda: stage.train(__doc__.splitlines()[0]))
