"""Stage `augment_preview`: training images beside draws of the training augmentation (`shared.augment`).

Usage: python scripts/augment_preview.py --data data/prepared/cifar10.npz \
           --out reports/figures/augment_preview.png"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifar import augment, data, outputs, params  # noqa: E402

class SCHEMA(params.Section):  # params.yaml `augment_preview`
    images: params.number(int, 1, 32)
    variants: params.number(int, 1, 16)


def preview_figure(images, labels, names, variants, seed, config):
    rows = len(images)
    fig, axes = plt.subplots(rows, variants + 1, figsize=(1.6 * (variants + 1), 1.75 * rows), squeeze=False)
    for r, (image, label) in enumerate(zip(images, labels)):
        batch = np.repeat(image[None], variants, axis=0)
        augmented = augment.augment_batch(batch, seed + r, config)
        for c, shown in enumerate([image, *augmented]):
            ax = axes[r, c]
            ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{names[label]}" if c == 0 else f"augmented {c}", fontsize=8)
    fig.suptitle("Training augmentation: original (left) and random draws", fontsize=10)
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["shared", "augment_preview"], schemas={"augment_preview": SCHEMA})
    seed, preview = cfg["shared"]["seed"], cfg["augment_preview"]

    arrays = data.load_prepared(args.data)
    rng = np.random.default_rng(seed)
    count = min(preview["images"], len(arrays["x_train"]))
    picks = rng.choice(len(arrays["x_train"]), size=count, replace=False)
    fig = preview_figure(
        arrays["x_train"][picks], arrays["y_train"][picks], [str(n) for n in arrays["class_names"]],
        preview["variants"], seed, cfg["shared"]["augment"],
    )
    with outputs.atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    outputs.run_stage("augment_preview", main)
