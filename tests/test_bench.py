"""studies/bench/bench.py runs end to end on a tiny archive and reports what `make bench` promises."""

import json

import pytest
import yaml

import synthetic
from conftest import REPO, run, script, MODEL_NAMES
import bench
from cifar import params, tta

pytestmark = pytest.mark.e2e


def test_bench_reports_every_model_the_matmul_fraction_the_time_ratio_and_the_levers(tmp_path):
    archive = synthetic.write_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=40)
    out = tmp_path / "bench.json"
    run(["python", script("bench"), "--archive", str(archive), "--sha256", synthetic.sha256(archive),
         "--images", "128", "--repeats", "1", "--train-steps", "2", "--model-images", "128", "--rounds", "1",
         "--lever-rounds", "1", "--levers", "onednn_off", "--lever-models", "fast", "--out", str(out)], cwd=REPO)
    report = json.loads(out.read_text())
    assert set(report["models"]) == set(MODEL_NAMES)
    ceiling = max(report["matmul_gflops"].values())
    assert ceiling > 1
    for model in report["models"].values():  # each rate's GFLOP/s and share of the matmul rate agree
        assert model["gflops"] == pytest.approx(model["train_img_per_s"] * model["train_gflop_per_image"], rel=0.01, abs=0.1)
        assert model["fraction_of_matmul"] == pytest.approx(model["gflops"] / ceiling, rel=0.01, abs=0.002)
        # Each model's own augmented stream, alone, beside its training rate.
        assert model["augmentation_vs_training"] == pytest.approx(
            model["augmentation_img_per_s"] / model["train_img_per_s"], rel=0.02, abs=0.01)
    # Inference as the later stages run it: plain, and with the shipped test-time views in one batch
    # (a model that ships none has the plain row only).
    registry = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    for name, model in report["models"].items():
        rates, level = model["inference_img_per_s"], registry[name]["tta"]
        assert set(rates) == ({"plain", "shipped", "per_view_vs_plain"} if level else {"plain"})
        if level:
            assert rates["per_view_vs_plain"] == pytest.approx(
                rates["shipped"] * len(tta.VIEW_WEIGHTS[level]) / rates["plain"], rel=0.01, abs=0.002)
    # The seed recipe's CNN (read literally) per training image, counted by hand: 39.6 M multiply-adds
    # forward (convolutions 1.77 + 18.9 + 18.9 M, dense layers 0.14 M), 2 FLOP each, x3 with the
    # backward pass; the default CNN repeats each block's convolution: + 3 x 37.7 M (64, 128 and 256
    # channels in and out at 32, 16 and 8 px).
    recipe = report["seed_recipe"]
    assert recipe["train_gflop_per_image"] == pytest.approx(0.2377, rel=0.03)
    assert (recipe["model"], recipe["precision"], recipe["section"]) == ("cnn", "float32", {"convs_per_block": 1})
    assert report["models"]["cnn"]["train_gflop_per_image"] == pytest.approx(0.2377 + 6 * 3 * 37.75e-3, rel=0.03)
    phases = yaml.safe_load((REPO / "params.yaml").read_text())["mobilenet"]["phases"]
    assert report["models"]["mobilenet"]["epochs"] == sum(p["epochs"] for p in phases)  # the phased recipe's
    fast, cnn = report["models"]["fast"], report["models"]["cnn"]
    assert report["baseline"] == "cnn" and cnn["predicted_time_vs_baseline"] == 1
    assert fast["predicted_time_vs_baseline"] == pytest.approx(
        (fast["epochs"] / fast["train_img_per_s"]) / (cnn["epochs"] / cnn["train_img_per_s"]), rel=0.01)
    # Each model in float32 and in every low precision this machine computes, against the
    # ceilings of that precision measured in the same run.
    precisions = bench.bench_precisions()
    assert set(report["ceilings_gflops"]) == set(precisions)
    for model in report["models"].values():
        assert set(model["precisions"]) == set(precisions) and model["precisions"]["float32"]["vs_float32"] == 1
        for p, row in model["precisions"].items():
            assert row["fraction_of_conv3x3"] == pytest.approx(
                row["gflops"] / report["ceilings_gflops"][p]["conv3x3"], rel=0.01, abs=0.002)
        assert model["train_img_per_s"] == model["precisions"][model["precision"]]["train_img_per_s"]
    seed_rate = recipe["train_img_per_s"]
    assert report["seed_recipe_float32_s"] == pytest.approx(recipe["epochs"] * report["train_images"] / seed_rate, rel=0.01)
    assert fast["predicted_time_vs_seed_recipe"] == pytest.approx(
        (fast["epochs"] / fast["train_img_per_s"]) / (recipe["epochs"] / seed_rate), rel=0.01, abs=0.001)  # 3 places
    assert set(report["levers"]) == {"fast"}  # only the models asked for
    for name in ("fast",):
        levers = report["levers"][name]
        assert set(levers) == {"default_img_per_s", "onednn_off"}
        # One round: the lever's ratio is its rate over the default's.
        assert levers["onednn_off"]["vs_default"] == pytest.approx(
            levers["onednn_off"]["img_per_s"] / levers["default_img_per_s"], rel=0.01, abs=0.001)  # rounded to 3 places


def test_a_section_lever_applies_only_to_the_models_whose_section_has_its_key():
    fused = bench.LEVERS["fused_batchnorm"][1]
    assert [name for name in MODEL_NAMES if bench.lever_applies(name, fused)] == ["fast", "fast_robust"]
    assert all(bench.lever_applies(name, bench.LEVERS["half_batch"][1]) for name in MODEL_NAMES)
    no_bias = bench.LEVERS["whiten_bias_off"][1]  # a nested key: train.whiten_bias_epochs
    assert [name for name in MODEL_NAMES if bench.lever_applies(name, no_bias)] == ["fast", "fast_robust"]
    section = {"batchnorm": "keras", "train": {"epochs": 15, "whiten_bias_epochs": 3}}
    assert params.merged(section, no_bias["section"]) == {"batchnorm": "keras", "train": {"epochs": 15, "whiten_bias_epochs": 0}}
    assert section["train"]["whiten_bias_epochs"] == 3  # the params section itself is untouched
