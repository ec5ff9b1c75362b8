"""Run `dvc repro` and record every stage's wall time: what the whole pipeline costs.

Usage: python studies/stage_times/stage_times.py [--out studies/stage_times/stage_times.json] -- [dvc repro args]
       (make stage-times: `dvc repro --force`, every stage from scratch, one after the other)

DVC prints "Running stage 'NAME':" as each stage starts; a stage's time runs from there to the
next stage's start (or to the end of `dvc repro`), so it includes DVC's own work on its outputs.
Stages DVC skipped as unchanged are listed as skipped. The file is written only if `dvc repro`
succeeds, with the host it ran on, and the total, the training stages and the stages after
training (LATER) against the seed recipe's float32 training time predicted by `make bench`
(studies/bench/bench.json), when bench ran on the same CPU;
`--compare-only` redoes that comparison after a later `make bench` on the same host.

Each finished stage's time is kept in build/stage_times.progress.json as it ends, so a run cut
short (a lost session, a killed machine) continues with `--resume`: `dvc repro` without --force
runs only the stages the cut run did not finish (the finished ones are up to date in dvc.lock),
and the record holds the times of both. When no training stage ran (training stages up to date,
or `-s` on the later ones), `training_s` is the sum of the trained models' own fit times
(`wall_time_s` in reports/metrics/train/NAME.json, the models the later stages measured), and
`training_source` says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package

from cifar import outputs  # noqa: E402

STARTED = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^(?:Stage )?'([^']+)' didn't change, skipping")
TRAINING = ("train@",)  # the training stages: train@NAME, one per model of the registry
# The stages after training, what a user pays again on every change of a model: every stage that
# reads a trained model or what is made from one (the rest are the data and the weights before it).
LATER = ("robustness", "evaluate", "export@", "parity@", "demo@", "artifacts_table")


def timed(lines, clock=time.monotonic, echo=print, ran=None, finished=lambda ran: None):
    """(stage seconds in the order they ran, skipped stages) from `dvc repro`'s output `lines`,
    added to `ran` (an earlier, cut-short run's); `finished(ran)` after each stage but the last
    (which ends only when `dvc repro` succeeds)."""
    ran, skipped, current, since = dict(ran or {}), [], None, None
    for line in lines:
        echo(line.rstrip("\n"))
        if match := STARTED.match(line):
            now = clock()
            if current is not None:
                ran[current] = now - since
                finished(ran)
            current, since = match.group(1), now
        elif match := SKIPPED.match(line):
            skipped.append(match.group(1))
    if current is not None:
        ran[current] = clock() - since
    return ran, skipped


def seed_recipe_seconds(bench_path, cpu):
    """The seed recipe's predicted float32 training time from `make bench`'s file, if it was
    measured on `cpu`; else None (a time from another host is no yardstick)."""
    try:
        bench = json.loads(Path(bench_path).read_text())
    except (OSError, ValueError):
        return None
    if bench.get("environment", {}).get("cpu") != cpu:
        return None
    return bench.get("seed_recipe_float32_s")


def compared(result, bench_path):
    """`result` with its total, its training stages and its later stages against the seed
    recipe's time from `bench_path`, if bench ran on the CPU the stages ran on."""
    seed = seed_recipe_seconds(bench_path, result["environment"]["cpu"])
    return {**result, "seed_recipe_float32_s": seed, **{
        f"{part}_vs_seed_recipe": round(result[f"{part}_s"] / seed, 3) if seed and f"{part}_s" in result else None
        for part in ("total", "training", "later")}}


def fit_times(train_metrics):
    """Each trained model's own fit time (`wall_time_s`) from the training stages' metrics."""
    return {f"train@{path.stem}": json.loads(path.read_text())[path.stem]["wall_time_s"]
            for path in sorted(Path(train_metrics).glob("*.json"))}


def record(ran, skipped, command, bench_path, train_metrics=Path("reports/metrics/train")):
    """The stage-times record: each stage, the total, training's share, the ratio to the seed recipe."""
    host = outputs.hardware()
    training = {name: s for name, s in ran.items() if name.startswith(TRAINING)}
    fits = {} if training else fit_times(train_metrics)  # no training stage ran under the clock
    later = sum(s for name, s in ran.items() if name.startswith(LATER))
    return compared({
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "stages_s": {name: round(s, 1) for name, s in ran.items()},
        "skipped": skipped,
        "total_s": round(sum(ran.values()) + sum(fits.values()), 1),
        "training_s": round(sum((training or fits).values()), 1),
        "training_source": f"wall_time_s in {train_metrics}/NAME.json (each model's fit; no training stage ran here)"
                           if fits else "stages_s",
        **({"training_fit_s": fits} if fits else {}),
        "later_s": round(later, 1),  # LATER: every stage after training
        "environment": host,
    }, bench_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("studies/stage_times/stage_times.json"))
    parser.add_argument("--bench", type=Path, default=Path("studies/bench/bench.json"),
                        help="make bench's file: the seed recipe's predicted float32 time on this host")
    parser.add_argument("--compare-only", action="store_true",
                        help="run nothing: compare the recorded total with --bench again (after a later make bench "
                             "on the same host)")
    parser.add_argument("--progress", type=Path, default=Path("build/stage_times.progress.json"),
                        help="each finished stage's time, kept as it ends for --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run cut short: keep the stage times in --progress (same host) and time "
                             "what `dvc repro` (without --force) still runs")
    parser.add_argument("repro_args", nargs="*", help="passed to dvc repro (after --)")
    args = parser.parse_args()
    if args.compare_only:
        if not args.out.is_file():
            sys.exit(f"stage_times: {args.out} not found: run `make stage-times` first")
        result = compared(json.loads(args.out.read_text()), args.bench)
        outputs.write_json(args.out, result)
        print(f"stage_times: {result['total_s'] / 60:.1f} min, {result['total_vs_seed_recipe']}x the seed recipe")
        return
    run, host = ["dvc", "repro", *args.repro_args], outputs.hardware()
    command, earlier = " ".join(run), {}
    if args.resume:
        if "--force" in run or "-f" in run:
            sys.exit("stage_times: --resume runs `dvc repro` without --force: the stages the cut run finished are "
                     "up to date, and only the others must run")
        try:
            progress = json.loads(args.progress.read_text())
        except (OSError, ValueError) as err:
            sys.exit(f"stage_times: no run to resume in {args.progress} ({err}): run `make stage-times`")
        if progress["environment"]["cpu"] != host["cpu"]:
            sys.exit(f"stage_times: the run in {args.progress} ran on {progress['environment']['cpu']}, not this "
                     "host: its times do not add up with this one's; run `make stage-times` from scratch")
        earlier, command = progress["stages_s"], f"{progress['command']}, resumed by {command}"

    def keep(ran):
        outputs.write_json(args.progress, {"command": command, "stages_s": ran, "environment": host})

    with subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        ran, skipped = timed(proc.stdout, echo=lambda line: print(line, flush=True), ran=earlier, finished=keep)
    if proc.returncode:
        sys.exit(f"stage_times: {' '.join(run)} failed (exit {proc.returncode}); {args.out} left as it was, the "
                 f"finished stages' times in {args.progress}: fix it and rerun with --resume")
    result = record(ran, [name for name in skipped if name not in earlier], command, args.bench)
    outputs.write_json(args.out, result)
    args.progress.unlink(missing_ok=True)
    print(f"stage_times: {len(ran)} stages in {result['total_s'] / 60:.1f} min (training "
          f"{result['training_s'] / 60:.1f} min, the stages after it {result['later_s'] / 60:.1f} min: "
          f"{result['later_vs_seed_recipe']}x the seed recipe's float32 training time) -> {args.out}")


if __name__ == "__main__":
    main()
