"""scripts/bench.py runs end to end on a tiny archive and reports what `make bench` promises."""

import json

import pytest
import yaml

import synthetic
from conftest import REPO, run, script

pytestmark = pytest.mark.e2e


def test_bench_reports_every_model_the_matmul_fraction_the_time_ratio_and_the_levers(tmp_path):
    archive = synthetic.write_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=40)
    out = tmp_path / "bench.json"
    run(["python", script("bench"), "--archive", str(archive), "--sha256", synthetic.sha256(archive),
         "--images", "128", "--repeats", "1", "--train-steps", "2", "--model-images", "128", "--rounds", "1",
         "--lever-rounds", "1", "--levers", "onednn_off", "--out", str(out)], cwd=REPO)
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"cnn", "mobilenet", "fast"}
    for model in report["models"].values():
        assert model["train_img_per_s"] > 0 and model["fraction_of_matmul"] > 0
    assert max(report["matmul_gflops"].values()) > 1
    phases = yaml.safe_load((REPO / "params.yaml").read_text())["finetune_mobilenet"]["phases"]
    assert report["models"]["mobilenet"]["epochs"] == sum(p["epochs"] for p in phases)  # the phased recipe's
    assert report["predicted_time_ratio_fast_vs_seed"] > 0
    for name in ("cnn", "fast"):
        levers = report["levers"][name]
        assert set(levers) == {"default_img_per_s", "onednn_off"}
        assert all(lever["vs_default"] > 0 for key, lever in levers.items() if key != "default_img_per_s")
