"""Stage `finetune_mobilenet`: fine-tune MobileNetV2 (last N layers) on the prepared data.

Usage: python scripts/finetune_mobilenet.py --weights models/pretrained \
           --data data/prepared/cifar10.npz --model models/mobilenet.keras \
           --history reports/history/mobilenet.csv --metrics reports/metrics/finetune_mobilenet.json \
           --state models/.resume

Reads `shared` (seed, augment, train: the same compile settings and callbacks as the CNN) and
`finetune_mobilenet` (input size, trainable layers, dropout). The backbone weights come from
the `fetch_weights` stage's folder, whose source.json names them.
"""

import json
from pathlib import Path

from cifar import models, params, stage


def weights_argument(folder):
    """What MobileNetV2(weights=...) takes for the folder `fetch_weights` wrote, and its source."""
    source_file = folder / "source.json"
    if not source_file.is_file():
        raise FileNotFoundError(f"{source_file} not found: it is written by the 'fetch_weights' stage; "
                                "run `dvc repro fetch_weights`")
    source = json.loads(source_file.read_text())
    return (str(folder / source["file"]) if source["file"] else None), source


def main():
    parser = stage.arguments(__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path, help="folder from `fetch_weights`")
    args = parser.parse_args()
    cfg = params.load(["shared", "finetune_mobilenet"])
    tune = cfg["finetune_mobilenet"]
    weights, source = weights_argument(args.weights)
    stage.run(
        "mobilenet",
        lambda: models.build_mobilenet(weights, tune["input_size"], tune["trainable_layers"], tune["dropout"]),
        # The weights count by content (source's sha256), not by the path that named them.
        args, {**cfg, "finetune_mobilenet": {k: v for k, v in tune.items() if k != "weights"}},
        provenance={"weights": source},
    )


if __name__ == "__main__":
    stage.main("finetune_mobilenet", main)
