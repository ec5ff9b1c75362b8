"""Write the README's results table from the committed metrics: what a reference run published.

Usage: python tools/readme_results.py [--readme README.md]   (make readme)

One row per model of the registry: the test accuracy of the reference run (evaluate.json; the
accuracy of the exported artifacts), its 95% binomial interval as a single run on the test set,
the mean ± std over seeds where the seed table (make seeds: studies/seeds/seeds.json)
holds the current run (cifar.spread.current), the mean accuracy on the robustness stage's
corrupted test images (reports/metrics/robustness.json), the training time and precision
(reports/metrics/train/NAME.json) and the host; then the whole pipeline's cost from
`make stage-times`, the seed CNN beside what the seed reported, and which model to ship for photos from the wild (`advice`). The block between
the README's `<!-- results-table ... -->` markers is replaced; tests/test_newcomer.py checks it is current.
The block between its `<!-- small-folders ... -->` markers gets each model at its defaults on two
small folders (make small-folders: studies/small_folder/advice.json) and which model to start
with on a small folder (chosen on val) and on a large one (`small_folders`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the cifar package

from cifar import outputs, spread  # noqa: E402

HEADER = ["| model | test accuracy | 95% interval, one run | over seeds, mean ± std | corrupted test images | "
          "training time | precision | host |",
          "|---|---|---|---|---|---|---|---|"]
# What the seed's text reports for its CNN after 25 epochs (shared/seed/, "Akurasi Pelatihan" and
# "Akurasi Uji"): the numbers ours is read beside, not ones this pipeline measured.
SEED_REPORTED = {"train": 0.9241, "test": 0.8673, "best_val": 0.8712, "best_epoch": 23}
READINGS = {1: "its text literally, one convolution per block",
            2: "each block as two convolutions (the reading that follows the seed's val curve)"}
BLOCK = re.compile(r"(<!-- results-table:.*?-->\n)(.*?)(<!-- /results-table -->)", re.S)
SMALL_BLOCK = re.compile(r"(<!-- small-folders:.*?-->\n)(.*?)(<!-- /small-folders -->)", re.S)
FOLDERS = {"digits": "digits", "cifar10_1000": "CIFAR-10 slice"}


def metrics(root):
    """(registry, the evaluate stages' metrics, the robustness stages' of the models they measured)
    under `root`, each merged over the models (cifar.outputs.read_models)."""
    import yaml

    root = Path(root)
    registry = yaml.safe_load((root / "params.yaml").read_text())["models"]
    robust = root / "reports/metrics/robustness"
    measured = [name for name in registry if (robust / f"{name}.json").is_file()]
    return (registry, outputs.read_models(root / "reports/metrics/evaluate", registry, "evaluate"),
            outputs.read_models(robust, measured, "robustness"))


def seed_rows(root, accuracy, wall_time_s):
    """Each model's row of the seed table (make seeds) where it holds that model's current run
    (`accuracy`, `wall_time_s`: name -> the pipeline's numbers) among two or more seeds
    (cifar.spread.current); models without one are left out."""
    path = Path(root) / "studies/seeds/seeds.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    return {name: table[name] for name in accuracy
            if spread.current(table.get(name), accuracy[name], wall_time_s[name])}


def rows(root=Path(".")):
    """The table's lines (header included) from the metrics under `root`."""
    root = Path(root)
    registry, evaluated, robust = metrics(root)
    images = evaluated["data"]["test_images"]
    kinds = len(next((r["corruptions"] for k, r in robust.items() if k != "data"), ()))
    lines = list(HEADER)
    trained = {name: json.loads((root / f"reports/metrics/train/{name}.json").read_text()) for name in registry}
    current = seed_rows(root, {name: evaluated[name]["test"]["accuracy"] for name in registry},
                        {name: trained[name][name]["wall_time_s"] for name in registry})
    for name, entry in registry.items():
        accuracy, summary, host = evaluated[name]["test"]["accuracy"], trained[name][name], trained[name]["environment"]
        low, high = spread.single_run_interval(accuracy, images)
        seeds = spread.describe(current[name]) if name in current else "1 run"
        interval = robust.get(name, {}).get("mean_corruption_interval_95_pp")  # the run's 95% interval over images
        corrupted = (f"{robust[name]['mean_corruption_accuracy']:.2%}" + (f" ± {interval:.2f} pp" if interval else "")
                     + f" (mean of {kinds} kinds)" if name in robust else "not measured")
        seed = f" (seed: {SEED_REPORTED['test']:.2%})" if name == "cnn" else ""
        lines.append(f"| {entry['label']} | {accuracy:.2%}{seed} | {low:.2%} – {high:.2%} | {seeds} | {corrupted} | "
                     f"{summary['wall_time_s'] / 60:.1f} min | {summary.get('precision', 'float32')} | "
                     f"{host['cpu']}, {host['cpu_count']} cores |")
    return lines


def cost(root=Path(".")):
    """The whole pipeline's cost, from make stage-times (studies/stage_times/stage_times.json),
    as one line; None before it has run."""
    path = Path(root) / "studies/stage_times/stage_times.json"
    if not path.is_file():
        return None
    times = json.loads(path.read_text())
    host = times["environment"]
    if times.get("training_fit_s"):  # the training stages did not run under the clock (stage_times.record)
        return (f"The stages after training (evaluation, robustness, exports, parity, the demo), each from scratch "
                f"(`stage_times.py`, finished {times['finished'][:10]}), took {times['later_s'] / 60:.0f} min on "
                f"{host['cpu']}, {host['cpu_count']} cores" + (f", {times['later_vs_seed_recipe']:.2f}x the seed recipe's "
                "float32 training time that host's `make bench` measured" if times.get("later_vs_seed_recipe") else "")
                + f"; with the models' own training times ({times['training_s'] / 60:.0f} min), "
                f"{times['total_s'] / 60:.0f} min in all: [stage_times.json](studies/stage_times/stage_times.json).")
    ratio = (f", {times['total_vs_seed_recipe']:.2f}x the seed recipe's float32 training time that host's `make bench` "
             "measured then" if times.get("total_vs_seed_recipe") else "")
    later = ""
    if times.get("later_s") is not None:  # a file from before the split has none
        later = (f"; the stages after training (evaluation, robustness, exports, parity, the demo) "
                 f"{times['later_s'] / 60:.0f} min" + (f", {times['later_vs_seed_recipe']:.2f}x"
                                                      if times.get("later_vs_seed_recipe") else ""))
    return (f"The whole pipeline, every stage from scratch (`make stage-times`, finished {times['finished'][:10]}), took "
            f"{times['total_s'] / 60:.0f} min (training {times['training_s'] / 60:.0f} min) on {host['cpu']}, "
            f"{host['cpu_count']} cores{ratio}{later}; a recipe changed since counts from the next run: "
            "[stage_times.json](studies/stage_times/stage_times.json).")


def convs_per_block(root=Path(".")):
    """How many convolutions per block the seed CNN of the committed run had: what dvc.lock
    records for train@cnn's `cnn.convs_per_block`. A lock from before the setting existed
    (train@cnn absent, or the key) records the only reading there was then: one."""
    import yaml

    lock = Path(root) / "dvc.lock"
    stages = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.is_file() else {}
    section = stages.get("train@cnn", {}).get("params", {}).get("params.yaml", {}).get("cnn", {})
    return section.get("convs_per_block", 1)


def seed_line(root=Path(".")):
    """The seed CNN's train and test accuracy beside what the seed reported, the reading of the
    seed's text this run trained, and the `-S` for the other; None before evaluate has measured a
    model named cnn."""
    evaluated = metrics(root)[1]
    if "cnn" not in evaluated:
        return None
    import yaml

    ours, reading = evaluated["cnn"], convs_per_block(root)
    other = 1 if reading != 1 else 2
    default = (yaml.safe_load((Path(root) / "params.yaml").read_text()).get("cnn") or {}).get("convs_per_block", reading)
    stale = (f" The default is now `cnn.convs_per_block: {default}`; this run predates it, the next reference run "
             "trains it." if default != reading else "")
    return (f"The seed reported {SEED_REPORTED['train']:.2%} train, {SEED_REPORTED['best_val']:.2%} best val "
            f"(epoch {SEED_REPORTED['best_epoch']}) and {SEED_REPORTED['test']:.2%} test accuracy for its CNN; "
            f"ours gets {ours['train']['accuracy']:.2%} train (on {ours['train']['images']:,} training images) and "
            f"{ours['test']['accuracy']:.2%} test, reading {READINGS.get(reading, f'each block as {reading} convolutions')} "
            f"(`cnn.convs_per_block: {reading}`). The other reading is `dvc exp run -S cnn.convs_per_block={other}`; "
            "the two compared on val: [studies/fidelity/](studies/fidelity/fidelity.md)." + stale)


def advice(root=Path(".")):
    """Which model to ship for photos from the wild, and why, from the metrics: the model most
    accurate on the robustness stage's corrupted test images, against the most accurate on clean
    ones, with their training times. None before the robustness stage has run."""
    root = Path(root)
    registry, evaluated, robust = metrics(root)
    if not robust:
        return None
    measured = [name for name in registry if name in robust and name in evaluated]
    if not measured:
        return None
    clean = {name: evaluated[name]["test"]["accuracy"] for name in measured}
    corrupted = {name: robust[name]["mean_corruption_accuracy"] for name in measured}
    kinds = robust[measured[0]]["corruptions"]
    severities = len([key for key in next(iter(kinds.values())) if key.startswith("severity_")])
    sturdy, best = max(measured, key=corrupted.get), max(measured, key=clean.get)

    wall = {name: json.loads((root / f"reports/metrics/train/{name}.json").read_text())[name]["wall_time_s"]
            for name in (sturdy, best)}

    def minutes(name):
        return wall[name] / 60

    # One run's clean accuracy can put the two models level where their seeds do not: the spreads too.
    current = seed_rows(root, {name: clean[name] for name in wall}, wall)
    seeds = ""
    if sturdy in current and best in current:
        spreads = [current[sturdy], current[best]]
        runs = [row["runs"] for row in spreads]
        counted = f"{runs[0]} seeds each" if runs[0] == runs[1] else f"{runs[0]} and {runs[1]} seeds"
        seeds = " (over {}: {:.2%} ± {:.2%} to {:.2%} ± {:.2%})".format(
            counted, *(row["test_accuracy"][key] for row in spreads for key in ("mean", "std")))

    first = (f"For photos from the wild (noisy, blurred, compressed, in fog or snow), ship `{sturdy}`: "
             f"{corrupted[sturdy]:.1%} on the robustness stage's corrupted test images (mean of {len(kinds)} kinds, "
             f"{severities} severities each)")
    if sturdy == best:
        return first + f", and the most accurate on clean ones too ({clean[sturdy]:.2%})."
    return (first + f", against {corrupted[best]:.1%} for `{best}`. "
            f"On clean test images it gives {clean[sturdy]:.2%} to `{best}`'s {clean[best]:.2%}{seeds}, "
            f"for {minutes(sturdy) / minutes(best):.2f}x its training time "
            f"({minutes(sturdy):.1f} min against {minutes(best):.1f}); `{best}` stays the choice for clean, "
            "well-lit pictures.")


def float32_line(root=Path(".")):
    """The fast model's float32 recipe (params.yaml `fast.float32`, where training resolves to
    float32) with its evidence from studies/float32/frontier.json: its test accuracy over seeds at
    the shipped test-time augmentation and its predicted time against the seed recipe; None while
    it is null or its seeds are not in the study."""
    import statistics

    import yaml

    root = Path(root)
    values = yaml.safe_load((root / "params.yaml").read_text())
    recipe, path = (values.get("fast") or {}).get("float32"), root / "studies/float32/frontier.json"
    if not recipe or not path.is_file():
        return None
    study = json.loads(path.read_text())
    label = next((label for label, row in study["candidates"].items() if row.get("settings") == recipe), None)
    runs = study["candidates"][label].get("seeds", {}) if label else {}
    rate = study.get("rates", {})
    if len(runs) < 2 or label not in rate.get("img_per_s", {}):
        return None
    tta = str(values["models"]["fast"]["tta"])
    test = [run["test_accuracy_by_tta"][tta] for run in runs.values()]
    ratio = study["candidates"][label]["epochs"] * rate["seed_recipe_img_per_s"] / (
        rate["seed_recipe_epochs"] * rate["img_per_s"][label])
    return (f"Where a CPU has no bfloat16 (every model then trains in float32), the fast model trains with its "
            f"float32 recipe (`fast.float32`: {label}): {statistics.fmean(test):.2%} ± {statistics.stdev(test):.2%} "
            f"test accuracy over {len(test)} seeds (test-time augmentation {tta}), in a predicted {ratio:.2f}x the seed recipe's float32 training "
            f"time on {rate['host']['cpu']} (`make bench`'s probe, {rate['rounds']} rounds); the frontier it was "
            "chosen from, on val: [studies/float32/frontier.md](studies/float32/frontier.md).")


def block(root=Path(".")):
    """What goes between the markers: the table, the pipeline's cost, the fast model's float32
    recipe, then which model to ship for photos from the wild."""
    lines = [line for line in (seed_line(root), cost(root), float32_line(root), advice(root)) if line]
    return "\n".join(rows(root)) + "\n" + "".join(f"\n{line}\n" for line in lines)


def small_folders(root=Path(".")):
    """Each model's val and test accuracy and training time on the two small folders of
    studies/small_folder/advice.json, then which model to start with on a small folder (the best
    mean val accuracy over them: a choice, so made on val) and on a large one (the most accurate on CIFAR-10's full test
    set, the results table's); None before make small-folders has run."""
    root = Path(root)
    path = root / "studies/small_folder/advice.json"
    if not path.is_file():
        return None
    study = json.loads(path.read_text())
    found = {(row["folder"], row["model"]): row for row in study["rows"]}
    folders = [name for name in FOLDERS if any(key[0] == name for key in found)]
    models = list(dict.fromkeys(row["model"] for row in study["rows"]))
    counts = {name: next(r for r in study["rows"] if r["folder"] == name) for name in folders}
    lines = ["| model | " + " | ".join(f"{FOLDERS[name]} ({sum(counts[name][k] for k in ('train_images', 'val_images', 'test_images')):,}): "
                                         "val / test, training" for name in folders) + " |",
             "|---|" + "---|" * len(folders)]
    for model in models:
        cells = [f"{found[name, model]['val_accuracy']:.1%} / {found[name, model]['test_accuracy']:.1%}, "
                 f"{found[name, model]['wall_time_s'] / 60:.1f} min ({found[name, model]['precision']})"
                 for name in folders]
        lines.append(f"| {found[folders[0], model]['label']} | " + " | ".join(cells) + " |")
    small = max(models, key=lambda m: sum(found[name, m]["val_accuracy"] for name in folders))
    host = study["environment"]
    evaluated = metrics(root)[1]
    large = max((m for m in models if m in evaluated), key=lambda m: evaluated[m]["test"]["accuracy"], default=None)
    line = (f"On a small folder, start with `{small}`: the best val accuracy over both folders here. "
            + (f"On a large one (CIFAR-10's 40,000 training images), `{large}`: the Results table's most accurate. "
               if large else "")
            + f"Every setting at its default (prepared at {counts[folders[0]]['side']} px, split by prepare), one seed, "
            + ("" if study.get("mobilenet_weights", {}).get("source", "imagenet") == "imagenet" else
               f"MobileNetV2 from the offline copy `{study['mobilenet_weights']['source']}` (not Keras' ImageNet file), ")
            + f"on {host['cpu']}, {host['cpu_count']} cores, code of commit {study['commit'][:7]}: "
            "[advice.json](studies/small_folder/advice.json).")
    return "\n".join(lines) + "\n\n" + line + "\n"


def replace(text, pattern, content, readme):
    if not pattern.search(text):
        sys.exit(f"readme_results: {readme} has no {pattern.pattern[1:20]}... block")
    return pattern.sub(lambda m: m.group(1) + content + m.group(3), text, count=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    table, small = block(), small_folders()
    text = replace(args.readme.read_text(), BLOCK, table, args.readme)
    if small:
        text = replace(text, SMALL_BLOCK, small, args.readme)
    args.readme.write_text(text)
    print(table + (small or ""), end="")


if __name__ == "__main__":
    main()
