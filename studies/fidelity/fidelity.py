"""The seed CNN's readings of the seed's text against the seed's own numbers: a study on val.

Usage: python studies/fidelity/fidelity.py [--readings 1 2] [--precision float32] [--out studies/fidelity]
       make fidelity [READINGS="1 2"] [PRECISION=float32]

The seed's text describes "a layered architecture of repeated layer blocks", then each block as
one convolution followed by batch normalization, pooling and dropout. Each reading (how many
Conv-BN pairs a block repeats: `cnn.convs_per_block`) is trained, one after another, by the
training stage's own command with the workspace's params but that one setting, in
build/fidelity/convs-N/ (the pipeline's outputs are untouched), and compared with what the seed
reports (SEED): its val accuracy after epochs 1, 6 and 23 and its best, from the run's DVCLive log;
its train accuracy on the whole training split, as the seed measured it; its training time.
The reading chosen is the one closest to the seed on those (mean absolute difference, in points):
val and train only. Test accuracy, measured once for each, is the one-off report beside the
seed's. `--precision` trains the readings in another precision than the workspace's
(shared.train.precision), in build/fidelity/convs-N-PRECISION/, as rows of their own: the
evidence for the chosen reading's precision default. Writes fidelity.json and fidelity.md with
every run found under the work folder; a finished run is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package

from cifar import outputs  # noqa: E402

# What the seed's text reports for its CNN after its 25 epochs (shared/seed/): val accuracy after
# epochs 1 and 6, its best (epoch 23), train and test accuracy.
SEED = {"val": {1: 0.4008, 6: 0.7611, 23: 0.8712}, "best_val": 0.8712, "best_epoch": 23, "train": 0.9241,
        "test": 0.8673}
EPOCHS = (1, 6, 23)


def distance(row):
    """Mean absolute difference from the seed, in points: val after EPOCHS, best val, train."""
    pairs = [(row["val"].get(e), SEED["val"][e]) for e in EPOCHS]
    pairs += [(row["best_val"], SEED["best_val"]), (row["train"], SEED["train"])]
    found = [abs(ours - theirs) for ours, theirs in pairs if ours is not None]
    return 100 * sum(found) / len(found)


def choose(rows):
    """The reading closest to the seed's numbers (never by test); marks each row's distance."""
    for row in rows:
        row["distance_pp"] = round(distance(row), 2)
    return min(rows, key=lambda row: row["distance_pp"])


def command(stage, places, root):
    """The stage's cmd as tokens, each flag of `places` pointed elsewhere and `python` this
    interpreter: a stage's own run outside the pipeline's outputs (seed sweeps, studies)."""
    import shlex

    from cifar.stage import resolved

    tokens = shlex.split(resolved(stage, root).get("cmd", ""))
    missing = [flag for flag in places if flag not in tokens[:-1]]
    if missing:
        raise outputs.StageError(f"the cmd of stage '{stage}' in dvc.yaml lacks {', '.join(missing)}")
    for i, token in enumerate(tokens[:-1]):
        if token in places:
            tokens[i + 1] = str(places[token])
    return [sys.executable if tokens[0] == "python" else tokens[0], *tokens[1:]]


def train(reading, folder, data, precision=None):
    """The training stage's command for the seed CNN with `convs_per_block: reading` (and
    `shared.train.precision: precision`, if given), outputs in `folder`."""
    repo = Path(__file__).resolve().parents[2]
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["cnn"]["convs_per_block"] = reading
    if precision:
        values["shared"]["train"]["precision"] = precision
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    places = {"--data": data.resolve(), "--model": folder / "cnn.keras", "--metrics": folder / "metrics.json",
              "--live": folder / "live", "--state": folder / "state", "--weights": repo / "models/pretrained/cnn"}
    cmd = command("train@cnn", places, repo)
    if not (places["--weights"] / "source.json").is_file():  # no fetch_weights run here: the seed CNN starts from none
        i = cmd.index("--weights")
        del cmd[i:i + 2]
    cmd[1] = str(repo / cmd[1])
    print(f"fidelity: convs_per_block {reading}: training in {folder}", flush=True)
    # Its own params.yaml: the stage reads params.yaml where it runs.
    if subprocess.run(cmd, cwd=folder, env=os.environ).returncode:
        raise SystemExit(f"fidelity: training reading {reading} failed; rerun to continue it from its last epoch")


def measure(reading, folder, data):
    """The row of a trained reading: its val curve (DVCLive), train and test accuracy, time."""
    from evaluate import read_history

    from cifar import data as datasets
    from cifar import evaluation, models

    arrays = datasets.load_prepared(data)
    model = models.load(folder / "cnn.keras")
    summary = json.loads((folder / "metrics.json").read_text())["cnn"]
    history = read_history(folder / "live", "train@cnn")
    accuracy = {split: evaluation.loss_and_accuracy(model, arrays[f"x_{split}"], arrays[f"y_{split}"], 256)[1]
                for split in ("train", "test")}
    return {"convs_per_block": reading, "val": {e: history[e - 1]["val_accuracy"] for e in EPOCHS if e <= len(history)},
            "best_val": summary["best_val_accuracy"], "best_epoch": summary["best_epoch"],
            "train": accuracy["train"], "train_images": int(len(arrays["y_train"])), "test": accuracy["test"],
            "epochs_run": summary["epochs_run"], "wall_time_s": summary["wall_time_s"],
            "precision": summary.get("precision", "float32"), "params": int(model.count_params()),
            "environment": json.loads((folder / "metrics.json").read_text())["environment"]}


def markdown(rows, chosen):
    def pct(value):
        return "-" if value is None else f"{value:.2%}"

    lines = ["| reading | val, epoch 1 | epoch 6 | epoch 23 | best val (epoch) | train, whole split | distance | time | "
             "test (one-off) |", "|---|---|---|---|---|---|---|---|---|",
             f"| the seed's text reports | {pct(SEED['val'][1])} | {pct(SEED['val'][6])} | {pct(SEED['val'][23])} | "
             f"{pct(SEED['best_val'])} ({SEED['best_epoch']}) | {pct(SEED['train'])} | | | {pct(SEED['test'])} |"]
    for r in rows:
        mark = " (chosen)" if r["convs_per_block"] == chosen["convs_per_block"] else ""
        lines.append(f"| {r['convs_per_block']} conv per block{mark}, {r['precision']} | {pct(r['val'].get(1))} | {pct(r['val'].get(6))} | "
                     f"{pct(r['val'].get(23))} | {pct(r['best_val'])} ({r['best_epoch']}) | {pct(r['train'])} | "
                     f"{r['distance_pp']:.2f} pp | {r['wall_time_s'] / 60:.1f} min | {pct(r['test'])} |")
    host = rows[0]["environment"] if rows else {}
    lines += ["", f"Distance: the mean absolute difference from the seed over the val and train columns (never test); "
                  "the reading of the closest run is chosen. "
                  f"One seed each (shared.seed), on {host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores. "
                  "Written by studies/fidelity/fidelity.py."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, nargs="+", default=[1, 2], help="convs_per_block values to compare")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/cifar10.npz"))
    parser.add_argument("--precision", help="train in this precision instead of shared.train.precision (runs of their own)")
    parser.add_argument("--work", type=Path, default=Path("build/fidelity"))
    parser.add_argument("--out", type=Path, default=Path("studies/fidelity"))
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"fidelity: {args.data} not found: run `dvc repro prepare` first")
    for reading in args.readings:
        folder = (args.work / (f"convs-{reading}" + (f"-{args.precision}" if args.precision else ""))).resolve()
        if not (folder / "metrics.json").is_file():
            train(reading, folder, args.data, args.precision)
    rows = [measure(int(folder.name.split("-")[1]), folder, args.data)
            for folder in sorted(args.work.resolve().glob("convs-*")) if (folder / "metrics.json").is_file()]
    chosen = choose(rows)
    outputs.write_json(args.out / "fidelity.json", {"seed": SEED, "readings": rows,
                                                    "chosen": chosen["convs_per_block"]})
    with outputs.atomic_path(args.out / "fidelity.md") as tmp:
        tmp.write_text(markdown(rows, chosen))
    print(markdown(rows, chosen))


if __name__ == "__main__":
    main()
