"""MobileNetV2's input size against val accuracy and training time: one DVC experiment per size.

Usage: python studies/mobilenet_sizes/mobilenet_sizes.py [--sizes 32 64 96 128 160] [--set KEY=VALUE ...]
           [--table studies/mobilenet_sizes/mobilenet_sizes.csv] [--figure studies/mobilenet_sizes/mobilenet_sizes.png]

For each size, one after another (never at the same time: their times are compared), runs
`dvc exp run --temp train@mobilenet -n mobilenet-<S>px -S mobilenet.input_size=S`
with the workspace's params otherwise (so every size gets the same recipe and budget; `--set`
adds -S overrides to all, e.g. a shorter budget). The 32x32 images are upscaled inside the model,
so each point is a model a user calls the same way. Then reads the experiments' training metrics
(`dvc exp show --json`) and writes the table (size, best val accuracy, training minutes, img/s,
and which size is selected: the best val accuracy; no training stage reads test, which is
evaluate's one-off report) and a figure of
val accuracy against training time, one point per size, into
studies/mobilenet_sizes/ (a study, not a DVC metric); `make sizes` runs this script.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/: the cifar package

METRICS = "reports/metrics/train/mobilenet.json"
COLUMNS = ["input_size", "best_val_accuracy", "train_minutes", "train_img_per_s", "epochs", "selected"]


def dvc(*args, check=True):
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"mobilenet_sizes: error: dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def experiment_metrics(shown, names):
    """{experiment name: the mobilenet training metrics} from `dvc exp show --json`."""
    found = {}

    def visit(node):
        if isinstance(node, dict):
            name = node.get("name")
            data = node.get("data") or {}
            metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data")
            if name in names and metrics and "mobilenet" in metrics:
                found[name] = metrics["mobilenet"]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(shown)
    return found


def select(rows):
    """The size to use: the best val accuracy (tuning never looks at test; test is the one-off
    report), the faster one on a tie. Marks the rows' `selected` and returns the chosen row."""
    chosen = max(rows, key=lambda r: (r["best_val_accuracy"], -r["train_minutes"]))
    for r in rows:
        r["selected"] = r is chosen
    return chosen


def figure(rows, path):
    """Val accuracy (what the size is chosen by) against training time, one labelled point per
    size (evaluate's chart)."""
    from cifar import evaluation

    points = [{"label": f"{r['input_size']} px", "test_accuracy": r["best_val_accuracy"],
               "wall_time_s": r["train_minutes"] * 60} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    evaluation.save_figure(evaluation.accuracy_against_time(points), path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128, 160])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param for every experiment, as dvc exp run -S takes it (repeatable)")
    parser.add_argument("--table", type=Path, default=Path("studies/mobilenet_sizes/mobilenet_sizes.csv"))
    parser.add_argument("--figure", type=Path, default=Path("studies/mobilenet_sizes/mobilenet_sizes.png"))
    parser.add_argument("--collect-only", action="store_true", help="only read experiments run before")
    args = parser.parse_args()
    names = {f"mobilenet-{size}px": size for size in args.sizes}
    if not args.collect_only:
        for name, size in names.items():
            dvc("exp", "remove", name, check=False)  # a rerun replaces the experiment of that name
            overrides = [f"-S=mobilenet.input_size={size}", *(f"-S={s}" for s in args.set)]
            print(f"{name}: dvc exp run --temp train@mobilenet {' '.join(overrides)}", flush=True)
            dvc("exp", "run", "--temp", "train@mobilenet", "-n", name, *overrides)
    found = experiment_metrics(json.loads(dvc("exp", "show", "--json").stdout), set(names))
    missing = sorted(set(names) - set(found), key=names.get)
    if missing:
        sys.exit(f"mobilenet_sizes: error: no metrics for {', '.join(missing)}; run without --collect-only")
    rows = [{"input_size": names[name], "best_val_accuracy": m["best_val_accuracy"],
             "train_minutes": round(m["wall_time_s"] / 60, 2), "train_img_per_s": m["train_img_per_s"],
             "epochs": m["epochs_run"]} for name, m in sorted(found.items(), key=lambda item: names[item[0]])]
    chosen = select(rows)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    with open(args.table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    figure(rows, args.figure)
    for r in rows:
        print(f"{r['input_size']:>4} px: val {r['best_val_accuracy']:.2%}, "
              f"{r['train_minutes']:.1f} min")
    print(f"Selected by val accuracy: {chosen['input_size']} px (mobilenet.input_size). "
          f"Wrote {args.table} and {args.figure}")


if __name__ == "__main__":
    main()
