"""Train models with several seeds, as DVC experiments: the spread behind an accuracy claim.

Usage: python studies/seeds/seeds.py --models fast|cnn,fast|all [--seeds 3] [--out studies/seeds]
       make seeds [MODELS=fast] [SEEDS=3]

The seeds are shared.seed, shared.seed + 1, ... The run with shared.seed is the pipeline's own
(reports/metrics/train/NAME.json and evaluate/NAME.json). Each other seed is a DVC experiment of
the model's evaluation stage and what it needs, `dvc exp run --temp -n seeds-NAME-SEED-RECIPE
-S shared.seed=SEED evaluate@NAME`: the model trained with that seed and measured as the pipeline
measures it, in a temporary copy (the workspace is untouched), on prepare's data (its split has a
seed of its own, prepare.split_seed: every seed sees the same val split and test set). Its results
are read back from `dvc exp show --json`; the experiment stays in `dvc exp show`.

The model's training stage must be up to date (`dvc status`), or, once the pipeline's run is in
runs.json, only lack its outputs (a fresh clone without the DVC cache), and every run carries the
id of the recipe it trained (dvc.lock's record of the stage: command, code and data md5s,
params). Runs of another recipe are dropped, so a spread is always of one recipe; the README's
results table (make readme) shows it beside the pipeline's run only. `--tables-only` rewrites
seeds.json and seeds.md from runs.json without training or data. No stage reads them: a sweep
never makes the pipeline stale.

runs.json, in git, keeps each finished run: a rerun skips it, an experiment already run (by its
name) is read instead of run again, and an interrupted sweep continues.
seeds.json and seeds.md give, per model, the mean, the standard deviation (n - 1), the min and
the max of test accuracy and of training time, the CPU they ran on, and the 95% interval of a
single run's accuracy on the test set (Wilson's binomial interval at the mean): cifar.spread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package

from cifar import outputs, spread  # noqa: E402


def run_record(name, seed, train, evaluated, source):
    """One run as runs.json keeps it, from the model's training and evaluation metrics (the
    contents of reports/metrics/train/NAME.json and evaluate/NAME.json)."""
    summary, environment = train[name], train.get("environment", {})
    return {"model": name, "seed": seed, "test_accuracy": round(evaluated[name]["test"]["accuracy"], 5),
            "best_val_accuracy": round(summary["best_val_accuracy"], 5), "wall_time_s": summary["wall_time_s"],
            "epochs_run": summary["epochs_run"], "precision": summary.get("precision", "float32"),
            "cpu": environment.get("cpu"), "gpus": environment.get("gpus", []), "source": source}

MISSING = ("not in cache", "deleted")  # how `dvc status` names an output that is absent, not changed


def pipeline_state(stage, status):
    """"current" when `dvc status --json` (parsed: `status`) shows the training stage `stage`, and
    everything upstream of it, up to date; "absent" when its only change is that its outputs are
    missing (a fresh clone without the DVC cache: the lock still describes what it trained); None
    otherwise (changed code, params or data: another recipe than the lock's)."""
    changes = [change for entries in status.values() for change in entries]
    if not changes:
        return "current"
    outs_only = all(isinstance(change, dict) and set(change) == {"changed outs"} and
                    set(change["changed outs"].values()) <= set(MISSING) for change in changes)
    return "absent" if outs_only and stage in status else None


def check_pipeline(stage, recorded):
    """Stop unless the sweep trains the recipe the pipeline trained (dvc.lock's): the stage is up to
    date, or its outputs are only missing and its own run (`recorded`) is already in runs.json, so
    the remaining seeds can train on a fresh clone without the pipeline's model."""
    status = subprocess.run(["dvc", "status", "--json", stage], capture_output=True, text=True)
    state = None if status.returncode else pipeline_state(stage, json.loads(status.stdout or "{}"))
    if state == "current" or (state == "absent" and recorded):
        return
    if state == "absent":
        raise SystemExit(f"seeds: the pipeline's {stage} has no outputs here (dvc status {stage}) and its run is not "
                         f"in runs.json; run `dvc pull {stage}` or `dvc repro {stage}` first: the sweep's first "
                         "seed is the pipeline's run, the others its recipe")
    raise SystemExit(f"seeds: the pipeline's {stage} is not up to date (dvc status {stage}); run "
                     f"`dvc repro {stage}` first: the sweep's first seed is the pipeline's run, the others its recipe")


def recipe_id(stage, lock="dvc.lock"):
    """sha256 of what the training stage ran, as dvc.lock records it (its command, the md5 of every
    dependency: code and data, and its params): runs of one recipe share it."""
    import hashlib

    from ruamel.yaml import YAML

    stages = YAML(typ="safe").load(Path(lock).read_text())["stages"] if Path(lock).is_file() else {}
    if stage not in stages:
        raise SystemExit(f"seeds: {lock} has no record of {stage}: run `dvc repro {stage}` first (the sweep's "
                         "first seed is the pipeline's run, the others its recipe)")
    entry = stages[stage]
    ran = {key: entry.get(key) for key in ("cmd", "deps", "params")}
    return hashlib.sha256(json.dumps(ran, sort_keys=True).encode()).hexdigest()


def pipeline_run(name, seed):
    """The pipeline's own run of `name` (seed shared.seed), from the workspace's metrics."""
    metrics = Path("reports/metrics")
    return run_record(name, seed, json.loads((metrics / f"train/{name}.json").read_text()),
                      json.loads((metrics / f"evaluate/{name}.json").read_text()), "pipeline (dvc repro)")


def experiments():
    """{experiment name: its data in `dvc exp show --json`} for every experiment of the workspace."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if shown.returncode:
        raise SystemExit(f"seeds: dvc exp show failed: {shown.stderr.strip()}")
    found = {}
    for commit in json.loads(shown.stdout or "[]"):
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name") and rev.get("data"):
                    found[rev["name"]] = rev["data"]
    return found


def experiment_run(name, seed, data, experiment):
    """The run of `name` with `seed` recorded by the experiment `experiment` (its `dvc exp show` data)."""
    metrics = {path: (entry or {}).get("data") or {} for path, entry in (data.get("metrics") or {}).items()}
    return run_record(name, seed, metrics[f"reports/metrics/train/{name}.json"],
                      metrics[f"reports/metrics/evaluate/{name}.json"], f"dvc exp {experiment}")


def seed_run(name, seed, recipe):
    """Train and measure `name` with `seed` as a DVC experiment (or read the one already run)."""
    from cifar import models

    experiment = f"seeds-{name}-{seed}-{recipe[:8]}"
    found = experiments().get(experiment)
    if found is None:
        command = ["dvc", "exp", "run", "--temp", "-n", experiment, "-S", f"shared.seed={seed}",
                   f"evaluate@{name}"]
        print(f"seeds: {name}, seed {seed}: {' '.join(command)}", flush=True)
        if subprocess.run(command).returncode:
            raise SystemExit(f"seeds: the experiment {experiment} ({models.train_stage(name)} with seed {seed}) failed")
        found = experiments()[experiment]
    return experiment_run(name, seed, found, experiment)


def markdown(summary, test_images):
    lines = ["| model | runs (seeds) | test accuracy, mean ± std | min – max | training time, mean ± std | precision | host |",
             "|---|---|---|---|---|---|---|"]
    for row in summary.values():
        acc, time_s = row["test_accuracy"], row["wall_time_s"]
        several = row["runs"] > 1  # one run has no standard deviation
        acc_std = f"{acc['std']:.2%}" if several else "-"
        time_std = f"{time_s['std'] / 60:.1f}" if several else "-"
        lines.append(
            f"| {row['label']} | {row['runs']} ({', '.join(map(str, row['seeds']))}) | "
            f"{acc['mean']:.2%} ± {acc_std} | {acc['min']:.2%} – {acc['max']:.2%} | "
            f"{time_s['mean'] / 60:.1f} ± {time_std} min | {', '.join(row['precision'])} | "
            f"{'; '.join(row['cpu'])} |")
    low, high = next(iter(summary.values()))["single_run_95_interval"] if summary else (0, 0)
    lines += ["", f"One run's accuracy on {test_images:,} test images carries a 95% binomial interval of about "
                  f"±{(high - low) / 2:.2%} (Wilson's, at the first model's mean). Written by studies/seeds/seeds.py from `dvc exp show`."]
    return "\n".join(lines) + "\n"


def main():
    from cifar import models, params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated registry names, or all")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds: shared.seed, shared.seed + 1, ...")
    parser.add_argument("--out", type=Path, default=Path("studies/seeds"))
    parser.add_argument("--tables-only", action="store_true",
                        help="write seeds.json and seeds.md from runs.json as it is: no training, no data needed "
                             "(make readme)")
    args = parser.parse_args()
    registry = params.load(["models"])["models"]
    names = list(registry) if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown or args.seeds < 1:
        raise SystemExit(f"seeds: unknown model(s) {', '.join(unknown)} (params.yaml models: {', '.join(registry)})"
                         if unknown else "seeds: --seeds must be at least 1")
    first = params.load(["shared"])["shared"]["seed"]
    runs_path = args.out / "runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.is_file() else []
    for name in [] if args.tables_only else names:
        recipe = recipe_id(models.train_stage(name))
        check_pipeline(models.train_stage(name), any(r["model"] == name and r["seed"] == first and r.get("recipe") == recipe
                                           for r in runs))
        older = [r for r in runs if r["model"] == name and r.get("recipe") != recipe]
        if older:  # another recipe's runs (other code, params or data): not part of this spread
            print(f"seeds: {name}: dropping {len(older)} run(s) of an earlier recipe", flush=True)
            runs = [r for r in runs if r not in older]
        for seed in range(first, first + args.seeds):
            if any(r["model"] == name and r["seed"] == seed for r in runs):
                continue
            record = pipeline_run(name, seed) if seed == first else seed_run(name, seed, recipe)
            runs.append({**record, "recipe": recipe})
            outputs.write_json(runs_path, runs)  # each run as it finishes
            print(f"seeds: {name}, seed {seed}: test accuracy {record['test_accuracy']:.2%}, "
                  f"{record['wall_time_s'] / 60:.1f} min", flush=True)
    # The test split's size, as evaluate measured it (the runs' accuracies are on that split).
    test_images = outputs.read_models("reports/metrics/evaluate", registry, "evaluate")["data"]["test_images"]
    summary = spread.table(runs, test_images, {n: e.get("label", n) for n, e in registry.items()})
    outputs.write_json(args.out / "seeds.json", summary)
    with outputs.atomic_path(args.out / "seeds.md") as tmp:
        tmp.write_text(markdown(summary, test_images))
    print(markdown(summary, test_images))


if __name__ == "__main__":
    main()
