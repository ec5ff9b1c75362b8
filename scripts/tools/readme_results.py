"""Write the README's results table from the committed metrics: what a reference run published.

Usage: python scripts/tools/readme_results.py [--readme README.md]   (make readme)

One row per model of the registry: the test accuracy of the reference run (evaluate.json; the
accuracy of the exported artifacts), its 95% binomial interval as a single run on the test set,
the mean ± std over seeds where the seed table (make seeds: reports/studies/seeds/seeds.json)
holds the current run (cifar.spread.current), the training time and precision
(reports/metrics/train/NAME.json) and the host; then the whole pipeline's cost from
`make stage-times`. The block between the README's
`<!-- results-table ... -->` markers is replaced; tests/test_newcomer.py checks it is current.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for the cifar package

from cifar import spread  # noqa: E402

HEADER = ["| model | test accuracy | 95% interval, one run | over seeds, mean ± std | training time | precision | host |",
          "|---|---|---|---|---|---|---|"]
BLOCK = re.compile(r"(<!-- results-table:.*?-->\n)(.*?)(<!-- /results-table -->)", re.S)


def rows(root=Path(".")):
    """The table's lines (header included) from the metrics under `root`."""
    import yaml

    root = Path(root)
    registry = yaml.safe_load((root / "params.yaml").read_text())["models"]
    evaluated = json.loads((root / "reports/metrics/evaluate.json").read_text())
    seeds_path = root / "reports/studies/seeds/seeds.json"
    seeds = json.loads(seeds_path.read_text()) if seeds_path.is_file() else {}
    images = evaluated["data"]["test_images"]
    lines = list(HEADER)
    for name, entry in registry.items():
        trained = json.loads((root / f"reports/metrics/train/{name}.json").read_text())
        accuracy, summary, host = evaluated[name]["test"]["accuracy"], trained[name], trained["environment"]
        low, high = spread.single_run_interval(accuracy, images)
        row = seeds.get(name)
        over_seeds = spread.describe(row) if spread.current(row, accuracy, summary["wall_time_s"]) else "1 run"
        lines.append(f"| {entry['label']} | {accuracy:.2%} | {low:.2%} – {high:.2%} | {over_seeds} | "
                     f"{summary['wall_time_s'] / 60:.1f} min | {summary.get('precision', 'float32')} | "
                     f"{host['cpu']}, {host['cpu_count']} cores |")
    return lines


def cost(root=Path(".")):
    """The whole pipeline's cost, from make stage-times (reports/studies/stage_times/stage_times.json),
    as one line; None before it has run."""
    path = Path(root) / "reports/studies/stage_times/stage_times.json"
    if not path.is_file():
        return None
    times = json.loads(path.read_text())
    host = times["environment"]
    ratio = (f", {times['total_vs_seed_recipe']:.2f}x the seed recipe's float32 training time on that host"
             if times.get("total_vs_seed_recipe") else "")
    return (f"The whole pipeline, every stage from scratch (`make stage-times`), took {times['total_s'] / 60:.0f} min "
            f"(training {times['training_s'] / 60:.0f} min) on {host['cpu']}, {host['cpu_count']} cores{ratio}: "
            "[stage_times.json](reports/studies/stage_times/stage_times.json).")


def block(root=Path(".")):
    """What goes between the markers: the table, then the pipeline's cost."""
    line = cost(root)
    return "\n".join(rows(root)) + "\n" + (f"\n{line}\n" if line else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    text = args.readme.read_text()
    if not BLOCK.search(text):
        sys.exit(f"readme_results: {args.readme} has no <!-- results-table: ... --> ... <!-- /results-table --> block")
    table = block()
    args.readme.write_text(BLOCK.sub(lambda m: m.group(1) + table + m.group(3), text, count=1))
    print(table, end="")


if __name__ == "__main__":
    main()
