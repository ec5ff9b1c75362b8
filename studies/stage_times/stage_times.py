"""What the pipeline's stages cost, from the time each stage records in its own metrics.

Usage: python studies/stage_times/stage_times.py [--resume] [-- dvc repro args]
       python studies/stage_times/stage_times.py --model NAME
       make stage-times [MODEL=NAME] [RESUME=1]

Every stage that keeps metrics records its own wall time in them, `stage_s` (cifar.outputs:
from its script's start to its metrics' write): prepare, train@, robustness@, evaluate@, parity@
and demo@, and parity@ gives export@'s (`export_stage_s`, from the export's metadata.json). Those
are what `dvc metrics show` and `dvc exp show` list for any run; this study only runs the stages
and adds the times up, it reads no log.

- The whole pipeline: `dvc repro --force` (every stage from scratch, one after the other; with
  `--resume`, `dvc repro` continues a run cut short: the stages it finished keep their times in
  their metrics), then each stage's time, the total, the training stages and the stages after
  training against the seed recipe's float32 training time that `make bench` predicts on the
  same CPU (studies/bench/bench.json) -> stage_times.json. A training stage whose metrics predate
  `stage_s` counts its fit time (`wall_time_s`), listed in `training_fit_s`.
- One model (`--model NAME`): its stages after training, `dvc repro --force --single-item` of
  export@, parity@, robustness@, evaluate@ and demo@, and the comparison (compare and
  artifacts_table keep no metrics, so their one command is timed here), against the model's own
  training time -> NAME.json beside stage_times.json: what one experiment on that model pays
  after its training.
`--compare-only` redoes the comparison with bench after a later `make bench` on the same host.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package

from cifar import outputs  # noqa: E402

METRICS = Path("reports/metrics")
# The stages after training, what a user pays again on every change of a model (as dvc.yaml names
# them), in an order `dvc repro --single-item` can run them in: robustness@ and demo@ read export@'s files.
LATER = ("export", "parity", "robustness", "evaluate", "demo")
# Where each stage's own time is: (its metrics file for a model NAME, the key).
RECORDED = {"train": ("train/{}.json", "stage_s"), "robustness": ("robustness/{}.json", "stage_s"),
            "evaluate": ("evaluate/{}.json", "stage_s"), "export": ("export/{}.json", "export_stage_s"),
            "parity": ("export/{}.json", "stage_s"), "demo": ("demo/{}.json", "stage_s")}


def read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def recorded(names, metrics=METRICS):
    """({stage: seconds} from the stages' own metrics, {train@NAME: fit seconds} for the training
    stages whose metrics predate stage_s)."""
    found, fits = {}, {}
    if (prepared := read(metrics / "prepare.json").get("stage_s")) is not None:
        found["prepare"] = prepared
    for name in names:
        for stage, (file, key) in RECORDED.items():
            values = read(metrics / file.format(name))
            if values.get(key) is not None:
                found[f"{stage}@{name}"] = values[key]
            elif stage == "train" and name in values:
                fits[f"train@{name}"] = values[name]["wall_time_s"]
    return found, fits


def seed_recipe_seconds(bench_path, cpu):
    """The seed recipe's predicted float32 training time from `make bench`'s file, if it was
    measured on `cpu`; else None (a time from another host is no yardstick)."""
    bench = read(bench_path)
    return bench.get("seed_recipe_float32_s") if bench.get("environment", {}).get("cpu") == cpu else None


def compared(result, bench_path):
    """`result` with its total, its training stages and its later stages against the seed
    recipe's time from `bench_path`, if bench ran on the CPU the stages ran on."""
    seed = seed_recipe_seconds(bench_path, result["environment"]["cpu"])
    return {**result, "seed_recipe_float32_s": seed, **{
        f"{part}_vs_seed_recipe": round(result[f"{part}_s"] / seed, 3) if seed and f"{part}_s" in result else None
        for part in ("total", "training", "later")}}


def record(ran, fits, command, bench_path):
    """The whole pipeline's record: each stage's own time (the small stages that keep no
    metrics, download to fetch_weights@ and compare, are only in the command's `wall_s`), the
    total, training's share, the stages after training, each model's later stages against its
    own training, and the ratios to bench."""
    training = {**{s: t for s, t in ran.items() if s.startswith("train@")}, **fits}
    later = {s: t for s, t in ran.items() if s.split("@")[0] in LATER}
    names = sorted({s.split("@")[1] for s in training})
    per_model = {name: model_share(name, ran, fits) for name in names}
    return compared({
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "stages_s": ran,
        "total_s": round(sum(ran.values()) + sum(fits.values()), 1),
        "training_s": round(sum(training.values()), 1),
        "training_source": "wall_time_s in reports/metrics/train/NAME.json (the fit; its metrics predate stage_s)"
                           if fits else "stage_s",
        **({"training_fit_s": fits} if fits else {}),
        "later_s": round(sum(later.values()), 1),
        "models": per_model,
        "environment": outputs.hardware(),
    }, bench_path)


def model_share(name, ran, fits, comparison_s=0.0):
    """One model's stages after training (and the comparison's seconds, if timed for it) against its training."""
    training = ran.get(f"train@{name}", fits.get(f"train@{name}"))
    later = round(sum(ran.get(f"{stage}@{name}", 0.0) for stage in LATER) + comparison_s, 1)
    return {"training_s": training, "later_s": later,
            "later_vs_training": round(later / training, 3) if training else None}


def timed(command):
    """Run `command`; its wall seconds (it must succeed)."""
    start = time.monotonic()
    if subprocess.run(command).returncode:
        sys.exit(f"stage_times: {' '.join(command)} failed; the stages it finished keep their times in their metrics")
    return round(time.monotonic() - start, 1)


def main():
    from cifar import params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("studies/stage_times/stage_times.json"))
    parser.add_argument("--bench", type=Path, default=Path("studies/bench/bench.json"),
                        help="make bench's file: the seed recipe's predicted float32 time on this host")
    parser.add_argument("--model", help="time one model's stages after training and the comparison (NAME.json)")
    parser.add_argument("--compare-only", action="store_true",
                        help="run nothing: compare the recorded total with --bench again (after a later make bench "
                             "on the same host)")
    parser.add_argument("--resume", action="store_true", help="continue a cut run: `dvc repro` without --force")
    parser.add_argument("repro_args", nargs="*", help="passed to dvc repro (after --)")
    args = parser.parse_args()
    if args.compare_only:
        if not args.out.is_file():
            sys.exit(f"stage_times: {args.out} not found: run `make stage-times` first")
        result = compared(json.loads(args.out.read_text()), args.bench)
        outputs.write_json(args.out, result)
        print(f"stage_times: {result['total_s'] / 60:.1f} min, {result['total_vs_seed_recipe']}x the seed recipe")
        return
    names = list(params.load(["models"])["models"])
    if args.model:
        if args.model not in names:
            sys.exit(f"stage_times: no model '{args.model}' in the registry ({', '.join(names)})")
        run = ["dvc", "repro", "--force", "--single-item", *(f"{stage}@{args.model}" for stage in LATER)]
        timed(run)
        comparison = ["dvc", "repro", "--force", "--single-item", "compare", "artifacts_table"]
        comparison_s = timed(comparison)
        ran, fits = recorded([args.model])
        share = model_share(args.model, ran, fits, comparison_s)
        result = {"command": f"{' '.join(run)}; {' '.join(comparison)}",
                  "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "stages_s": {s: t for s, t in ran.items() if s.split("@")[0] in LATER}, "comparison_s": comparison_s,
                  **share, "environment": outputs.hardware()}
        out = args.out.with_name(f"{args.model}.json")
        outputs.write_json(out, result)
        print(f"stage_times: {args.model}: the stages after training {share['later_s'] / 60:.1f} min, "
              f"{share['later_vs_training']}x its training -> {out}")
        return
    run = ["dvc", "repro", *([] if args.resume else ["--force"]), *args.repro_args]
    wall_s = timed(run)
    ran, fits = recorded(names)
    result = {**record(ran, fits, " ".join(run), args.bench), "wall_s": wall_s}
    outputs.write_json(args.out, result)
    print(f"stage_times: {len(ran)} stages in {result['total_s'] / 60:.1f} min (training "
          f"{result['training_s'] / 60:.1f} min, the stages after it {result['later_s'] / 60:.1f} min: "
          f"{result['later_vs_seed_recipe']}x the seed recipe's float32 training time) -> {args.out}")


if __name__ == "__main__":
    main()
