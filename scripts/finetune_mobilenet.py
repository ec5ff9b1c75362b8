"""Stage `finetune_mobilenet`: fine-tune MobileNetV2 (last N layers) on the prepared data.

Usage: python scripts/finetune_mobilenet.py --name mobilenet --weights models/pretrained \
           --data data/prepared/cifar10.npz --model models/trained/mobilenet.keras \
           --history reports/history/mobilenet.csv --metrics reports/metrics/train/mobilenet.json \
           --state models/.resume

Reads `shared` (seed, augment, train: the same compile settings and callbacks as the CNN) and
`finetune_mobilenet` (cifar.mobilenet.validate): input size, dropout, augmentation, and either the
seed's one phase (the last `trainable_layers` layers train) or `phases`, e.g. a new head on the
frozen backbone, then the backbone's top at a lower learning rate, each phase resumable and
starting from the best model of the one before. The backbone weights come from the
`fetch_weights` stage's folder, whose source.json names them.
"""

from pathlib import Path

from cifar import mobilenet, outputs, params, stage


def weights_argument(folder):
    """What MobileNetV2(weights=...) takes for the folder `fetch_weights` wrote, and its source."""
    source = outputs.read_json(folder / "source.json", "fetch_weights", needs=["file", "sha256"])
    return (str(folder / source["file"]) if source["file"] else None), source


def main():
    parser = stage.arguments(__doc__.splitlines()[0])
    parser.add_argument("--name", default="mobilenet", help="the model's name in the registry (default: mobilenet)")
    parser.add_argument("--weights", required=True, type=Path, help="folder from `fetch_weights`")
    args = parser.parse_args()
    entry, tune = params.model_entry(args.name)
    mobilenet.validate(tune, entry["params"])
    cfg = params.load(["shared"])
    weights, source = weights_argument(args.weights)
    augment, enabled = mobilenet.augmentation(tune, cfg["shared"]["augment"])
    train = {**cfg["shared"]["train"], "augment": enabled}
    stage.run(
        args.name, None,
        # The weights count by content (source's sha256), not by the path that named them.
        args, {**cfg, entry["params"]: {k: v for k, v in tune.items() if k != "weights"}, "registry": entry},
        provenance={"weights": source}, augment=augment,
        phases=mobilenet.phases(tune, weights, train), extra_metrics=test_accuracy,
    )


def test_accuracy(best_model, arrays):
    """The trained model's test accuracy in its training metrics too, so that a sweep of DVC
    experiments over this stage alone (scripts/mobilenet_sizes.py) compares test accuracies."""
    from cifar import evaluation

    model = evaluation.load_model(best_model, "finetune_mobilenet")
    _, accuracy = evaluation.loss_and_accuracy(model, arrays["x_test"], arrays["y_test"], 256)
    print(f"test accuracy {accuracy:.2%}")
    return {"test_accuracy": accuracy}


if __name__ == "__main__":
    stage.main("finetune_mobilenet", main)
