"""Which test-time augmentation each model ships: val accuracy at each level against the latency
of the exported artifact at that level (issue 52, item 3).

Usage: python studies/tta/choose_tta.py --data data/prepared/cifar10.npz [--models fast fast_robust] [--runs 50]
       make tta-study

For each trained model (models/trained/NAME.keras) and each level (0 none, 1 flip, 2 flip + 1 px
shifts; cifar.tta), the model as export ships it (its val-fitted temperature, then the level):
- its accuracy on every val image (never test), and which images it gets right;
- its latency as exported: the float32 TF-Lite file in LiteRT (what an app or MediaPipe loads) and
  the TF.js model in the demo page (headless Chromium; skipped, with the reason, without one),
  each the median of `--runs` single-image predictions, as parity and demo time them.

The rule (`choose`): start at level 0; a higher level replaces the current one only when
- val shows its gain is real: the exact one-sided McNemar test on the images the two levels
  disagree on, at 5%; and
- the gain is worth its latency: at least GAIN_PP_PER_DOUBLING points per doubling of the TF-Lite
  latency, half a point being the 95% interval of one test measurement at 93% (10,000 images),
  so a doubling must buy what a test run can tell apart.
tta.json keeps every number and the choice, tta.md is its table; params.yaml's models.NAME.tta
ships the choice."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # the cifar package

from cifar import data, evaluation, export, inference, models, outputs, page, params  # noqa: E402
from cifar.tflite import tflite  # noqa: E402

LEVELS = (0, 1, 2)
ALPHA = 0.05
GAIN_PP_PER_DOUBLING = 0.5
OUT = ROOT / "studies/tta/tta.json"


def mcnemar_p(better, worse):
    """One-sided exact McNemar: P(at least `better` of the `better + worse` discordant images go
    the higher level's way, were the two levels equally accurate)."""
    from scipy.stats import binomtest

    return float(binomtest(better, better + worse, 0.5, alternative="greater").pvalue) if better + worse else 1.0


def choose(levels):
    """The level to ship from {level: {"correct": bool array, "tflite_latency_ms": ms}}, and each
    step's test against the level it would replace."""
    current, steps = LEVELS[0], []
    for level in LEVELS[1:]:
        if level not in levels:
            continue
        now, then = levels[level], levels[current]
        better = int(np.sum(now["correct"] & ~then["correct"]))
        worse = int(np.sum(~now["correct"] & then["correct"]))
        gain_pp = float(now["correct"].mean() - then["correct"].mean()) * 100
        doublings = math.log2(now["tflite_latency_ms"] / then["tflite_latency_ms"])
        p = mcnemar_p(better, worse)
        worth = gain_pp >= GAIN_PP_PER_DOUBLING * max(doublings, 0.0)
        steps.append({"from": current, "to": level, "gained_images": better, "lost_images": worse,
                      "gain_pp": round(gain_pp, 3), "latency_doublings": round(doublings, 2),
                      "p_value": p, "significant": bool(p < ALPHA), "worth_its_latency": bool(worth)})
        if p < ALPHA and worth:
            current = level
    return current, steps


def latencies(model, folder, x, classes, runs):
    """The float32 TF-Lite file's and the demo page's single-image latency of `model`, exported into `folder`."""
    export.saved_model(model, folder / "saved_model", x[:64])
    path = folder / "model.tflite"
    path.write_bytes(tflite(folder / "saved_model", "float32"))
    measured = {"tflite_latency_ms": inference.latency_ms(inference.TFLitePredictor(path), x, runs)}
    export.tfjs(folder / "saved_model", folder / "tfjs")
    (folder / "metadata.json").write_text(json.dumps({  # what the page's index reads (serve.py)
        "label": folder.name, "classes": classes, "input_shape": list(x.shape[1:]),
        "artifacts": {"tfjs": {"file": "tfjs/model.json"}}}))
    try:
        measured["page_latency_ms"] = page.measure(folder, folder.name, runs)["latency_ms"]
    except page.PageUnavailable as err:
        measured["page_skipped"] = str(err)
    return measured


def study(name, arrays, runs):
    model = models.load(ROOT / "models/trained" / f"{name}.keras", stage=models.train_stage(name))
    _, fit = export.calibrated(model, arrays)
    classes = [str(c) for c in arrays["class_names"]]
    levels = {}
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        for level in LEVELS:
            shipped = export.shipped(model, level, fit["temperature"])
            correct = evaluation.predict(shipped, arrays["x_val"]).argmax(axis=1) == arrays["y_val"]
            folder = Path(tmp) / f"{name}-tta{level}"
            folder.mkdir()
            levels[level] = {"correct": correct, "val_accuracy": float(correct.mean()),
                             **latencies(shipped, folder, arrays["x_test"], classes, runs)}
            print(f"{name}: TTA {level}: val {correct.mean() * 100:.2f}%, TF-Lite "
                  f"{levels[level]['tflite_latency_ms']:.2f} ms, page {levels[level].get('page_latency_ms', 'n/a')} ms")
    chosen, steps = choose(levels)
    print(f"{name}: ships TTA {chosen}")
    return {"levels": {str(k): {key: v for key, v in level.items() if key != "correct"} for k, level in levels.items()},
            "steps": steps, "chosen": chosen, "temperature": fit["temperature"], "val_images": int(len(arrays["y_val"]))}


def table(result):
    lines = ["| model | TTA | val accuracy | TF-Lite latency | page latency | step: gained / lost images, p | ships |",
             "|---|---|---|---|---|---|---|"]
    for name, found in result["models"].items():
        steps = {s["to"]: s for s in found["steps"]}
        for level, row in found["levels"].items():
            step = steps.get(int(level))
            tested = (f"{step['gained_images']} / {step['lost_images']}, p {step['p_value']:.3f}"
                      f"{'' if step['worth_its_latency'] else ', under 0.5 pp per doubling'}" if step else "")
            page_ms = f"{row['page_latency_ms']:.2f} ms" if "page_latency_ms" in row else "not measured"
            lines.append(f"| {name} | {level} | {row['val_accuracy'] * 100:.2f}% | {row['tflite_latency_ms']:.2f} ms | "
                         f"{page_ms} | {tested} | {'**yes**' if int(level) == found['chosen'] else ''} |")
    env = result["environment"]
    return "\n".join(lines) + (
        f"\n\nVal: {next(iter(result['models'].values()))['val_images']:,} images, one trained model each (seed "
        f"{result['seed']}). Latency: median of {result['runs']} single-image predictions, on {env['cpu']}, "
        f"{env['cpu_count']} cores. A step is tested against the level it would replace. Written by "
        f"studies/tta/choose_tta.py at commit {result['commit']}.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/cifar10.npz")
    parser.add_argument("--models", nargs="*", help="registry names (default: every trained one)")
    parser.add_argument("--runs", type=int, default=50, help="single-image predictions timed per artifact")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import subprocess

    registry = params.load(["models"])["models"]
    names = args.models or [n for n in registry if (ROOT / "models/trained" / f"{n}.keras").is_file()]
    arrays = data.load_prepared(args.data)
    result = {"models": {name: study(name, arrays, args.runs) for name in names},
              "rule": f"McNemar exact one-sided p < {ALPHA} and >= {GAIN_PP_PER_DOUBLING} pp per doubling of TF-Lite latency",
              "runs": args.runs, "seed": params.load(["shared"])["shared"]["seed"], "environment": outputs.hardware(),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip()}
    outputs.write_json(args.out, result)
    args.out.with_suffix(".md").write_text(table(result))
    print(f"Wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
