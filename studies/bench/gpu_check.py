"""The GPU check (`make gpu-check`): what this project does on the machine's accelerator, in one file.

Usage: python studies/bench/gpu_check.py --bench build/gpu_check/bench.json \
           --train-metrics build/gpu_check/fast.json --model build/gpu_check/fast.keras \
           --data data/prepared/cifar10.npz --out studies/bench/gpu.json

Reads what `make gpu-check` ran before it: `make bench` on this machine (`--bench`) and a real-data
training of the fast model (`--train-metrics`, `--model`, written by the train@fast stage's
script outside the workspace's outputs), measures that model on the test set, and writes
`--out`: the device and precision the training used, each model's training img/s beside its
augmented stream's img/s, and the fast model's time to its accuracy.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/: the cifar package

from cifar import data, evaluation, models, outputs  # noqa: E402


def report(bench, trained, test_accuracy):
    """The GPU check's numbers, from bench's report and the fast model's training metrics."""
    fast = trained["fast"]
    return {
        "device": fast["device"],
        "precision": fast["precision"],
        "jit_compile": fast.get("jit_compile"),
        "models": {name: {"train_img_per_s": m["train_img_per_s"], "augmentation_img_per_s": m["augmentation_img_per_s"],
                          "augmentation_vs_training": m["augmentation_vs_training"],
                          "fraction_of_matmul": m["fraction_of_matmul"],
                          "predicted_time_vs_seed_recipe": m.get("predicted_time_vs_seed_recipe")}
                   for name, m in bench["models"].items()},
        "fast": {"test_accuracy": test_accuracy, "best_val_accuracy": fast["best_val_accuracy"],
                 "epochs": fast["epochs_run"], "wall_time_s": fast["wall_time_s"],
                 "train_img_per_s": fast["train_img_per_s"]},
        "environment": bench.get("environment"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True, type=Path)
    parser.add_argument("--train-metrics", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    bench = outputs.read_json(args.bench, "make bench", needs=["models"])
    trained = outputs.read_json(args.train_metrics, "train@fast", needs=["fast.device", "fast.wall_time_s"])
    arrays = data.load_prepared(args.data)
    _, accuracy = evaluation.loss_and_accuracy(models.load(args.model, models.entry("fast")[0]["tta"]),
                                               arrays["x_test"], arrays["y_test"], 256)
    result = report(bench, trained, accuracy)
    outputs.write_json(args.out, result)
    print(f"gpu-check: {result['device']}, {result['precision']}: the fast model reached {accuracy:.2%} test "
          f"accuracy in {result['fast']['wall_time_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    outputs.run_stage("gpu-check", main)
