"""Stage `demo@NAME`: the demo page's own numbers for one model's TF.js export, in headless Chromium.

Usage: python scripts/demo.py --name cnn --export models/export/cnn --metrics reports/metrics/demo/cnn.json

Load time, median latency over `parity.latency_runs` images and the backend (cifar.page); with
several WASM threads, also on one. Its own stage, so a page edit reruns this only. Without
Chromium the file says why the page was not measured."""

import argparse
from pathlib import Path

from cifar import outputs, page, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml models)")
    parser.add_argument("--export", required=True, type=Path, help="the model's export folder (export@NAME)")
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args()
    loaded = params.load(["models", "parity"])
    if args.name not in loaded["models"]:
        raise params.ParamsError(f"params.yaml: no model '{args.name}' in the models registry; "
                                 f"registered: {', '.join(loaded['models'])}")
    runs = loaded["parity"]["latency_runs"] or 1
    name = args.name
    try:
        found = page.measure(args.export, name, runs)
        count = found.get("threads")
        threads = f", {count} thread{'s' if count != 1 else ''}" if count else ""
        print(f"{name}: demo page: load {found['load_ms']:,.0f} ms, {found['latency_ms']:.2f} ms/img "
              f"({found['backend']}{threads}, {found['browser']})")
        if found.get("backend") == "wasm" and (count or 1) > 1:
            found["one_thread_latency_ms"] = page.measure(args.export, name, runs, threads=1)["latency_ms"]
            print(f"{name}: demo page on 1 thread: {found['one_thread_latency_ms']:.2f} ms/img")
    except page.PageUnavailable as err:
        found = {"skipped": str(err)}
        print(f"demo: warning: {name}: the demo page was not measured: {err}")
    outputs.write_json(args.metrics, {"model": name, "page": found, "hardware": outputs.hardware(),
                                      "stage_s": outputs.stage_seconds()})


if __name__ == "__main__":
    outputs.run_stage("demo", main, errors=(ValueError, RuntimeError))
