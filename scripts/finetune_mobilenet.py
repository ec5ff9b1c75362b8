"""Stage `finetune_mobilenet`: fine-tune MobileNetV2 (last N layers) on the prepared data.

Usage: python scripts/finetune_mobilenet.py --name mobilenet --weights models/pretrained \
           --data data/prepared/cifar10.npz --model models/trained/mobilenet.keras \
           --history reports/history/mobilenet.csv --metrics reports/metrics/train/mobilenet.json \
           --live reports/live/mobilenet --state models/.resume

Reads `shared` (seed, augment, train: the same compile settings and callbacks as the CNN) and
`finetune_mobilenet` (cifar.models.mobilenet.validate): input size, dropout, augmentation, and either the
seed's one phase (the last `trainable_layers` layers train) or `phases`, e.g. a new head on the
frozen backbone, then the backbone's top at a lower learning rate, each phase resumable and
starting from the best model of the one before. The backbone weights come from the
`fetch_weights` stage's folder, whose source.json names them.
"""

from cifar import stage


def test_accuracy(best_model, arrays):
    """The trained model's test accuracy in its training metrics too, so that a sweep of DVC
    experiments over this stage alone (scripts/tools/mobilenet_sizes.py) compares test accuracies."""
    from cifar import evaluation, models

    model = models.load(best_model, "finetune_mobilenet")
    _, accuracy = evaluation.loss_and_accuracy(model, arrays["x_test"], arrays["y_test"], 256)
    print(f"test accuracy {accuracy:.2%}")
    return {"test_accuracy": accuracy}


if __name__ == "__main__":
    stage.main("finetune_mobilenet", lambda: stage.train(__doc__.splitlines()[0], extra_metrics=test_accuracy))
