"""End to end: the real `dvc repro` in a temporary copy of the repository, on synthetic data."""

import json
import re

import keras
import pytest

import synthetic
from cifar import data, inference
from conftest import run, set_param

pytestmark = pytest.mark.e2e


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_runs_every_stage_and_leaves_status_clean(pipeline):
    repo, env, first = pipeline
    assert ran_stages(first) == {"download", "prepare", "augment_preview", "train_cnn", "train_fast",
                                 "fetch_weights", "finetune_mobilenet", "robustness", "evaluate",
                                 "export@cnn", "export@mobilenet", "export@fast",
                                 "parity@cnn", "parity@mobilenet", "parity@fast", "artifacts_table"}
    assert (repo / "data" / "prepared" / "cifar10.npz").is_file()
    table = (repo / "reports" / "artifacts.md").read_text()
    for label in ("seed CNN", "MobileNetV2 (ImageNet weights)", "fast CNN (airbench94-style)"):
        assert f"| {label} | TF-Lite int8 | LiteRT | yes |" in table
    assert (repo / "reports" / "figures" / "augment_preview.png").stat().st_size > 10_000
    counts = json.loads((repo / "reports" / "metrics" / "prepare.json").read_text())["counts"]
    assert counts == {"train": 160, "val": 40, "test": 40}
    for name in ("cnn", "mobilenet", "fast"):
        assert (repo / "models" / "trained" / f"{name}.keras").is_file()
        metrics = json.loads((repo / "reports" / "metrics" / "train" / f"{name}.json").read_text())
        assert metrics[name]["epochs_run"] == 2
        history = (repo / "reports" / "history" / f"{name}.csv").read_text().splitlines()
        assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr" and len(history) == 3
    weights = json.loads((repo / "reports" / "metrics" / "train" / "mobilenet.json").read_text())["weights"]
    assert weights["file"] == "mobilenet_v2_no_top.weights.h5"
    assert weights["sha256"] == synthetic.sha256(repo.parent / "mobilenet_v2_test.weights.h5")
    # No path of this machine in the metrics and reports (the weights' origin is a kind, not a path).
    for path in (repo / "reports").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md"):
            assert str(repo.parent) not in path.read_text(errors="replace"), path
    assert not (repo / "models" / ".resume").exists() or not any((repo / "models" / ".resume").iterdir())


def test_robustness_and_calibration_for_every_model(pipeline):
    repo, env, first = pipeline
    robust = json.loads((repo / "reports" / "metrics" / "robustness.json").read_text())
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert robust["data"]["test_images"] == 40  # robustness.images 1000 > the 40 test images: all of them
    for name in ("cnn", "mobilenet", "fast"):
        result = robust[name]
        assert set(result["corruptions"]) == {"gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur", "jpeg",
                                              "pixelate", "brightness", "darken", "contrast", "fog"}
        cells = [v for c in result["corruptions"].values() for k, v in c.items() if k.startswith("severity_")]
        assert len(cells) == 50 and result["mean_corruption_accuracy"] == pytest.approx(sum(cells) / 50)
        # The clean accuracy of the robustness stage is evaluate's test accuracy (the same images).
        assert result["clean_accuracy"] == pytest.approx(evaluated[name]["test"]["accuracy"])
        rows = (repo / "reports" / "eval" / "robustness" / f"{name}.csv").read_text().splitlines()
        assert rows[0] == "corruption,severity,accuracy" and len(rows) == 1 + 10 * 6
        assert (repo / "reports" / "figures" / "robustness" / f"{name}.png").stat().st_size > 10_000

        calibration = evaluated[name]["calibration"]
        assert 0 <= calibration["ece"] <= 1 and calibration["nll"] > 0 and calibration["temperature"] > 0
        assert calibration["val_nll_temperature_scaled"] <= calibration["val_nll"] + 1e-9
        reliability = (repo / "reports" / "eval" / "reliability" / f"{name}.csv").read_text().splitlines()
        assert reliability[0] == "confidence,accuracy,count"
        assert sum(int(line.split(",")[2]) for line in reliability[1:]) == 40
        assert (repo / "reports" / "figures" / "evaluate" / f"{name}_reliability.png").is_file()
    summary = (repo / "reports" / "summary.md").read_text()
    assert "## Robustness and calibration" in summary and "mean corruption accuracy" in summary
    assert "Running stage" not in run(["dvc", "repro", "robustness"], cwd=repo, **env).stdout


def test_evaluate_outputs(pipeline):
    repo, env, first = pipeline
    assert re.search(r"cnn: train accuracy \d+\.\d\d% \(loss [\d.]+\), test accuracy \d+\.\d\d%", first)
    metrics = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    for name in ("cnn", "mobilenet", "fast"):
        assert set(metrics[name]["per_class"]["cat"]) == {"precision", "recall", "f1", "accuracy"}
        predictions = (repo / "reports" / "eval" / "confusion" / f"{name}.csv").read_text().splitlines()
        assert predictions[0] == "actual,predicted" and len(predictions) == 41
        # The reported accuracy is the one the written predictions give, and the model's own.
        pairs = [line.split(",") for line in predictions[1:]]
        assert metrics[name]["test"]["accuracy"] == pytest.approx(sum(a == p for a, p in pairs) / 40)
        model = inference.load(repo / "models" / "trained" / f"{name}.keras").model  # registers our layers
        arrays = data.load_prepared(repo / "data" / "prepared" / "cifar10.npz")
        predicted = model.predict(arrays["x_test"].astype("float32"), verbose=0).argmax(axis=1)
        names = arrays["class_names"].tolist()
        assert [names[i] for i in predicted] == [p for _, p in pairs]
        assert metrics[name]["train"]["loss"] == pytest.approx(
            float(keras.losses.categorical_crossentropy(
                keras.utils.to_categorical(arrays["y_train"], 10),
                model.predict(arrays["x_train"].astype("float32"), verbose=0)).numpy().mean()), rel=1e-4)
        for figure in ("training_curves", "confusion_matrix", "misclassified"):
            assert (repo / "reports" / "figures" / "evaluate" / f"{name}_{figure}.png").stat().st_size > 5_000
        per_class = (repo / "reports" / "eval" / "per_class" / f"{name}.csv").read_text().splitlines()
        assert per_class[0] == "class,accuracy" and len(per_class) == 11
        curves = (repo / "reports" / "eval" / "accuracy" / f"{name}.csv").read_text().splitlines()
        assert curves[0] == "epoch,train,val" and len(curves) == 3
    assert (repo / "reports" / "figures" / "evaluate" / "accuracy_vs_training_time.png").stat().st_size > 5_000
    timing = (repo / "reports" / "eval" / "accuracy_vs_time.csv").read_text().splitlines()
    assert timing[0] == "model,train_minutes,test_accuracy" and [t.split(",")[0] for t in timing[1:]] == ["cnn", "mobilenet", "fast"]
    summary = (repo / "reports" / "summary.md").read_text()
    assert "| cnn |" in summary and "| mobilenet |" in summary and "| 509,322 |" in summary
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=repo, **env).stdout)
    evaluate = shown[""]["data"]["reports/metrics/evaluate.json"]["data"]  # the workspace's metrics
    assert evaluate["cnn"]["test"]["accuracy"] == metrics["cnn"]["test"]["accuracy"]
    status = run(["dvc", "status", "--json"], cwd=repo, **env)
    assert json.loads(status.stdout) == {}
    again = run(["dvc", "repro"], cwd=repo, **env)
    assert ran_stages(again.stdout) == set()


def test_changing_a_preview_param_reruns_only_augment_preview(pipeline):
    repo, env, _ = pipeline
    set_param(repo, "augment_preview.variants", 3)
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {"augment_preview"}


def test_changing_a_finetune_param_reruns_only_finetune(pipeline):
    repo, env, _ = pipeline
    set_param(repo, "finetune_mobilenet.dropout", 0.3)
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {
        "finetune_mobilenet", "robustness", "evaluate", "export@mobilenet", "parity@mobilenet", "artifacts_table"}


def test_the_same_weights_under_another_path_do_not_retrain(pipeline, tmp_path):
    """fetch_weights is keyed on the file's content: a copy elsewhere reruns the cheap copy
    stage, and nothing after it."""
    repo, env, _ = pipeline
    moved = tmp_path / "elsewhere" / "renamed.weights.h5"
    moved.parent.mkdir()
    moved.write_bytes((repo.parent / "mobilenet_v2_test.weights.h5").read_bytes())
    set_param(repo, "finetune_mobilenet.weights", str(moved))
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {"fetch_weights"}
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_changing_an_augmentation_param_does_not_rerun_prepare(pipeline):
    repo, env, _ = pipeline
    set_param(repo, "shared.augment.rotation_degrees", 5)
    ran = ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout)
    assert ran == {"augment_preview", "train_cnn", "finetune_mobilenet", "robustness", "evaluate",
                   "export@cnn", "export@mobilenet", "parity@cnn", "parity@mobilenet", "artifacts_table"}
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}
