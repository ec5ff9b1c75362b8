"""The fast model in float32: val accuracy against predicted training time, over the levers that
trade work for accuracy (issue 52's frontier).

Usage: python studies/float32/frontier.py train --data data/prepared/cifar10.npz --work /tmp/frontier [LABEL ...]
       python studies/float32/frontier.py seeds --data data/prepared/cifar10.npz --work /tmp/frontier LABEL [--seeds 42 1 2]
       python studies/float32/frontier.py rates --archive ../shared/data/cifar-10-python.tar.gz [--rounds 2]
       python studies/float32/frontier.py table   (frontier.md and frontier.png from frontier.json)

`train` trains each candidate (CANDIDATES: params.yaml's `fast` section with the candidate's
settings laid over it, always in float32) with the training stage itself (scripts/train.py, in a
clone of the committed code holding that params.yaml), then measures it on every val image at each
test-time augmentation level (0 none, 1 flip, 2 flip + 1 px shifts), as `evaluate` measures
test. `rates` measures, in one run of alternating rounds, each candidate's float32 training rate
and the seed recipe's (bench's probe: the seed CNN read literally, one convolution per block,
batch 64, float32), so that a candidate's predicted training time against the seed recipe,
epochs x (seed recipe's img/s) / (25 x its img/s), compares on one host. The val accuracy does not
depend on the host; the time ratio does, so `rates` is run on each host it is claimed for.
`seeds` trains the chosen candidate at more seeds (shared.seed) and measures each on val and, once,
on test: the recipe is picked on val, its test accuracy is the report. frontier.json keeps all of
it, keyed by label; `table` writes frontier.md and the plot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # the cifar package

from cifar import outputs, params  # noqa: E402

OUT = ROOT / "studies/float32/frontier.json"
MUON = {"learning_rate": 0.24, "momentum": 0.6, "newton_schulz_steps": 3}  # airbench94_muon's


def epochs(n):
    return {"train": {"epochs": n, "validate_every": n}}


# label -> the settings laid over params.yaml's `fast` section (train.precision: float32 always).
CANDIDATES = {
    "15 epochs (the bfloat16 recipe)": epochs(15),
    "12 epochs": epochs(12),
    "10 epochs": epochs(10),
    "8 epochs": epochs(8),
    "8 epochs, Muon": params.merged(epochs(8), {"train": {"muon": MUON}}),
    "10 epochs, Muon": params.merged(epochs(10), {"train": {"muon": MUON}}),
    "12 epochs, widths 64/192/192": {"widths": [64, 192, 192], **epochs(12)},
    "15 epochs, widths 64/192/192": {"widths": [64, 192, 192], **epochs(15)},
}


def section(label):
    fast = yaml.safe_load((ROOT / "params.yaml").read_text())["fast"]
    return params.merged(params.merged(fast, CANDIDATES[label]), {"train": {"precision": "float32"}})


def load():
    return json.loads(OUT.read_text()) if OUT.is_file() else {"candidates": {}}


def save(found):
    outputs.write_json(OUT, found)


def trained(args, label, seed):
    """Train one candidate at one seed (None: params.yaml's) with the training stage, in a clone of the
    committed code (the stage resolves itself in dvc.yaml); a trained one is kept, a cut one resumes."""
    name = label.replace(" ", "_").replace(",", "").replace("/", "-") + (f"_seed{seed}" if seed is not None else "")
    folder = args.work / name
    if not folder.is_dir():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    config["fast"] = section(label)
    if seed is not None:
        config["shared"]["seed"] = seed
    (folder / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if not (folder / "fast.keras").is_file():
        subprocess.run([sys.executable, "scripts/train.py", "--name", "fast", "--data", str(args.data.resolve()),
                        "--model", "fast.keras", "--metrics", "fast.json", "--live", "live", "--state", "state"],
                       cwd=folder, check=True)
    return folder, json.loads((folder / "fast.json").read_text())["fast"]


def accuracy_by_tta(folder, x, y):
    import numpy as np

    from cifar import evaluation, models

    accuracy = {}
    for tta in (0, 1, 2):
        predicted = evaluation.predict(models.load(folder / "fast.keras", tta), x, 256).argmax(axis=1)
        accuracy[str(tta)] = float(np.mean(predicted == y))
    return accuracy


def seeds(args):
    from cifar import data

    arrays = data.load_prepared(args.data)
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["shared"]["seed"]
    for seed in args.seeds:
        folder, summary = trained(args, args.label, None if seed == default else seed)
        row = {"val_accuracy_by_tta": accuracy_by_tta(folder, arrays["x_val"], arrays["y_val"]),
               "test_accuracy_by_tta": accuracy_by_tta(folder, arrays["x_test"], arrays["y_test"]),
               "test_images": int(len(arrays["y_test"])), "wall_time_s": summary["wall_time_s"],
               "train_img_per_s": summary["train_img_per_s"], "precision": summary["precision"],
               "host": outputs.hardware()["cpu"]}
        found = load()
        found["candidates"].setdefault(args.label, {}).setdefault("seeds", {})[str(seed)] = row
        save(found)
        print(args.label, seed, json.dumps(row), flush=True)


def train(args):
    from cifar import data

    for label in args.labels or CANDIDATES:
        folder, summary = trained(args, label, None)
        arrays = data.load_prepared(args.data)
        accuracy = accuracy_by_tta(folder, arrays["x_val"], arrays["y_val"])
        row = {"settings": CANDIDATES[label], "epochs": summary["epochs_run"], "precision": summary["precision"],
               "val_images": int(len(arrays["y_val"])), "val_accuracy_by_tta": accuracy,
               "wall_time_s": summary["wall_time_s"], "train_img_per_s": summary["train_img_per_s"],
               "host": outputs.hardware()["cpu"]}
        found = load()  # another process may have written meanwhile
        found["candidates"][label] = {**found["candidates"].get(label, {}), **row}
        save(found)
        print(label, json.dumps(row), flush=True)


def probe(args, name, settings):
    out = subprocess.run([sys.executable, str(ROOT / "studies/bench/bench.py"), "--archive", str(args.archive),
                          "--out", "/dev/null", "--probe", name, "--probe-settings", json.dumps(settings)],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"frontier: the probe of {name} {settings} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["img_per_s"]


def rate_key(label):
    """What a candidate's training rate depends on: its network and optimizer, not its epochs."""
    candidate = section(label)
    return json.dumps({"widths": candidate["widths"], "train": {"precision": "float32", "muon": candidate["train"]["muon"]}},
                      sort_keys=True)


def rates(args):
    seed = {"section": {"convs_per_block": 1}, "precision": "float32"}
    keys = sorted({rate_key(label) for label in CANDIDATES})
    measured = {"seed recipe": [], **{key: [] for key in keys}}
    for _ in range(args.rounds):
        measured["seed recipe"].append(probe(args, "cnn", seed))
        for key in keys:
            measured[key].append(probe(args, "fast", {"section": json.loads(key)}))
        print({k: v[-1] for k, v in measured.items()}, flush=True)
    found = load()
    found["rates"] = {"host": outputs.hardware(), "rounds": args.rounds,
                      "seed_recipe_img_per_s": statistics.median(measured["seed recipe"]), "seed_recipe_epochs": 25,
                      "img_per_s": {label: statistics.median(measured[rate_key(label)]) for label in CANDIDATES}}
    save(found)


def table(_args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = load()
    rate = found.get("rates", {})
    # A rate depends on the network and optimizer only (rate_key): a candidate added after the
    # rates run shares the rate measured for its key.
    by_key = {rate_key(label): r for label, r in rate.get("img_per_s", {}).items() if label in CANDIDATES}
    for label in found["candidates"]:
        if label in CANDIDATES and rate_key(label) in by_key:
            rate["img_per_s"].setdefault(label, by_key[rate_key(label)])
    save(found)
    lines = ["| candidate | epochs | float32 img/s | predicted time vs seed recipe | val, no TTA | val, TTA 1 | val, TTA 2 |",
             "|---|---|---|---|---|---|---|"]
    points = []
    for label, row in found["candidates"].items():
        own = rate.get("img_per_s", {}).get(label)
        ratio = row["epochs"] * rate["seed_recipe_img_per_s"] / (rate["seed_recipe_epochs"] * own) if own else None
        acc = row["val_accuracy_by_tta"]
        lines.append(f"| {label} | {row['epochs']} | " + (f"{own:.0f} | {ratio:.2f}x" if own else "- | -") +
                     f" | {acc['0']:.2%} | {acc['1']:.2%} | {acc['2']:.2%} |")
        if ratio:
            points.append((ratio, acc, label))
    host = rate.get("host", {})
    lines += ["", f"Rates: one run of {rate.get('rounds')} alternating rounds on {host.get('cpu')}, {host.get('cpu_count')} "
              f"cores (seed recipe {rate.get('seed_recipe_img_per_s', 0):.0f} img/s in float32). Val accuracy: one seed "
              f"each, {next(iter(found['candidates'].values()))['val_images']:,} val images. Written by "
              "studies/float32/frontier.py.", ""]
    for label, row in found["candidates"].items():
        runs = row.get("seeds", {})
        if not runs:
            continue
        own = rate.get("img_per_s", {}).get(label)
        ratio = f", {row['epochs'] * rate['seed_recipe_img_per_s'] / (rate['seed_recipe_epochs'] * own):.2f}x the seed recipe" if own else ""
        lines += [f"### {label}: {len(runs)} seeds{ratio}", "",
                  "| seed | val, TTA 0 / 1 / 2 | test, TTA 0 / 1 / 2 | training time | host |", "|---|---|---|---|---|"]
        for seed, run in sorted(runs.items(), key=lambda item: int(item[0])):
            val, test = run["val_accuracy_by_tta"], run["test_accuracy_by_tta"]
            lines.append(f"| {seed} | {' / '.join(f'{val[k]:.2%}' for k in '012')} | "
                         f"{' / '.join(f'{test[k]:.2%}' for k in '012')} | {run['wall_time_s'] / 60:.0f} min | {run['host']} |")
        cells = {}
        for split in ("val", "test"):
            values = [[run[f"{split}_accuracy_by_tta"][k] for run in runs.values()] for k in "012"]
            cells[split] = " / ".join(f"{statistics.fmean(v):.2%} ± {statistics.stdev(v) if len(v) > 1 else 0:.2%}"
                                      for v in values)
        lines.append(f"| mean ± std | {cells['val']} | {cells['test']} | | |")
        lines += ["", f"Test: {next(iter(runs.values()))['test_images']:,} images, once per seed; the recipe is "
                  "chosen on val.", ""]
    (OUT.parent / "frontier.md").write_text("\n".join(lines))
    if points:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for tta, marker in (("0", "o"), ("2", "s")):
            axis.scatter([p[0] for p in points], [p[1][tta] * 100 for p in points], marker=marker,
                         label=f"TTA {tta}")
        for ratio, acc, label in points:
            axis.annotate(label, (ratio, acc["2"] * 100), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.axvline(0.8, color="grey", linestyle=":", label="0.8x the seed recipe")
        axis.set_xlabel("predicted float32 training time / the seed recipe's")
        axis.set_ylabel("val accuracy (%)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(OUT.parent / "frontier.png", dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("train")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--work", type=Path, required=True)
    run.add_argument("labels", nargs="*", help=f"of: {', '.join(CANDIDATES)} (default: all)")
    rate = sub.add_parser("rates")
    rate.add_argument("--archive", type=Path, required=True)
    rate.add_argument("--rounds", type=int, default=2)
    several = sub.add_parser("seeds")
    several.add_argument("--data", type=Path, required=True)
    several.add_argument("--work", type=Path, required=True)
    several.add_argument("label", choices=CANDIDATES)
    several.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    sub.add_parser("table")
    args = parser.parse_args()
    {"train": train, "seeds": seeds, "rates": rates, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
