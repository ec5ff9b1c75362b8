"""End to end: the real `dvc repro` in a temporary copy of the repository, on synthetic data."""

import json
import re

import keras
import pytest
import yaml

import synthetic
from cifar import data, inference
from conftest import history, run, set_param, MODEL_NAMES

pytestmark = pytest.mark.e2e


PER_MODEL = ("fetch_weights", "train", "robustness", "evaluate", "export", "parity", "demo")


def per_model(name, root):
    """{NAME: ..., "data": ...}: the model's metrics from `root`/NAME.json (its own stage's)."""
    return json.loads((root / f"{name}.json").read_text())


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


def validate_every(repo, name):
    """The model's epochs between validation passes (its `train`, over shared's)."""
    from cifar import models

    return models.entry(name, repo / "params.yaml")[1]["train"]["validate_every"]


def test_repro_runs_every_stage_and_leaves_status_clean(pipeline):
    repo, env, first = pipeline
    registry = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    assert ran_stages(first) == {"download", "prepare", "augment_preview", "compare", "artifacts_table",
                                 *(f"{stage}@{name}" for name in registry for stage in PER_MODEL)}
    assert (repo / "data" / "prepared" / "cifar10.npz").is_file()
    table = (repo / "reports" / "artifacts.md").read_text()
    export = yaml.safe_load((repo / "params.yaml").read_text())["export"]
    floats = export["int8_float_layers"]
    for label in (entry["label"] for entry in registry.values()):
        # The int8 candidate export chose on val (which one depends on the tiny model's weights),
        # and whether it is integer-only: yes for int8, no with float layers.
        assert re.search(rf"\| {re.escape(label)} \| TF-Lite int8 \((integer only\) \| LiteRT \| yes"
                         rf"|float worst{floats}\) \| LiteRT \| no) \|", table), \
            [line for line in table.splitlines() if line.startswith(f"| {label} | TF-Lite int8")]
    assert (repo / "reports" / "figures" / "augment_preview.png").stat().st_size > 10_000
    counts = json.loads((repo / "reports" / "metrics" / "prepare.json").read_text())["counts"]
    assert counts == {"train": 160, "val": 40, "test": 40}
    for name in MODEL_NAMES:
        assert (repo / "models" / "trained" / f"{name}.keras").is_file()
        metrics = json.loads((repo / "reports" / "metrics" / "train" / f"{name}.json").read_text())
        assert metrics[name]["epochs_run"] == 2
        rows = history(repo, name)  # DVCLive's log, the one record of the run
        assert [r["epoch"] for r in rows] == [1, 2] and all(r["loss"] > 0 and r["lr"] > 0 for r in rows)
    weights = json.loads((repo / "reports" / "metrics" / "train" / "mobilenet.json").read_text())["weights"]
    assert weights["file"] == "mobilenet_v2_no_top.weights.h5"
    assert weights["sha256"] == synthetic.sha256(repo.parent / "mobilenet_v2_test.weights.h5")
    # No path of this machine in the metrics and reports (the weights' origin is a kind, not a path).
    for path in (repo / "reports").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md"):
            assert str(repo.parent) not in path.read_text(errors="replace"), path
    assert not (repo / "models" / ".resume").exists() or not any((repo / "models" / ".resume").iterdir())
    # Every stage with metrics records its own time in them (make stage-times adds them up).
    metrics = repo / "reports" / "metrics"
    for name in MODEL_NAMES:
        times = [json.loads((metrics / f"{kind}/{name}.json").read_text())[key] for kind, key in (
            ("train", "stage_s"), ("robustness", "stage_s"), ("evaluate", "stage_s"), ("export", "export_stage_s"),
            ("export", "stage_s"), ("demo", "stage_s"))]
        assert all(t > 0 for t in times), (name, times)


def test_robustness_and_calibration_for_every_model(pipeline):
    repo, env, first = pipeline
    metrics = repo / "reports" / "metrics"
    robust = {name: per_model(name, metrics / "robustness") for name in MODEL_NAMES}
    evaluated = {name: per_model(name, metrics / "evaluate")[name] for name in MODEL_NAMES}
    corruptions = yaml.safe_load((repo / "params.yaml").read_text())["robustness"]["corruptions"]
    assert len(corruptions) == 15 and corruptions[:10] == ["gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur",
                                                           "jpeg", "pixelate", "brightness", "darken", "contrast", "fog"]
    for name in MODEL_NAMES:
        assert robust[name]["data"]["test_images"] == 40  # robustness.images 1000 > the 40 test images: all of them
        result = robust[name][name]
        assert list(result["corruptions"]) == corruptions
        cells = [v for c in result["corruptions"].values() for k, v in c.items() if k.startswith("severity_")]
        assert len(cells) == 75 and result["mean_corruption_accuracy"] == pytest.approx(sum(cells) / 75)
        assert 0 < result["mean_corruption_interval_95_pp"] < 50  # 40 images: wide, but measured
        assert all(c["interval_95_pp"] >= 0 for c in result["corruptions"].values())
        # The original ten's mean, kept for continuity with the earlier reports.
        original = [v for c in corruptions[:10] for k, v in result["corruptions"][c].items() if k.startswith("severity_")]
        assert result["mean_corruption_accuracy_original_10"] == pytest.approx(sum(original) / 50)
        # It measures the shipped float32 TF-Lite file: its clean accuracy is that file's on the same
        # test images in parity (temperature and test-time augmentation inside, which evaluate's Keras
        # model does not have).
        shipped = json.loads((metrics / "export" / f"{name}.json").read_text())["artifacts"]["tflite_float32"]
        assert result["clean_accuracy"] == pytest.approx(shipped["accuracy"])
        rows = (repo / "reports" / "eval" / "robustness" / f"{name}.csv").read_text().splitlines()
        assert rows[0] == "corruption,severity,accuracy" and len(rows) == 1 + 15 * 6
        assert (repo / "reports" / "figures" / "robustness" / f"{name}.png").stat().st_size > 10_000

        calibration = evaluated[name]["calibration"]
        assert calibration["nll"] > 0 and calibration["temperature"] > 0
        assert calibration["val_nll_temperature_scaled"] <= calibration["val_nll"] + 1e-9
        reliability = (repo / "reports" / "eval" / "reliability" / f"{name}.csv").read_text().splitlines()
        assert reliability[0] == "confidence,accuracy,count"
        bins = [[float(v) for v in line.split(",")] for line in reliability[1:]]
        assert sum(count for _, _, count in bins) == 40
        # The ECE is the count-weighted gap between confidence and accuracy of the bins plotted (rounded to 1e-4).
        assert calibration["ece"] == pytest.approx(sum(n / 40 * abs(a - c) for c, a, n in bins), abs=1e-3)
        figure = repo / "reports" / "figures" / "evaluate" / name / "reliability.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    summary = (repo / "reports" / "summary.md").read_text()
    assert "## Robustness and calibration" in summary and "mean corruption accuracy" in summary
    # Each model's single-run interval; the spread over seeds is a study's, linked, never read.
    assert "## One run, and the spread over seeds" in summary and "(../studies/seeds/seeds.md)" in summary
    for name in MODEL_NAMES:
        low, high = evaluated[name]["test"]["single_run_95_interval"].values()
        assert low <= evaluated[name]["test"]["accuracy"] <= high and high - low > 0.05  # 40 test images
        assert "seeds" not in evaluated[name]
    assert "Running stage" not in run(["dvc", "repro", "robustness@cnn"], cwd=repo, **env).stdout


def test_evaluate_outputs(pipeline):
    repo, env, first = pipeline
    assert re.search(r"cnn: train accuracy \d+\.\d\d% \(loss [\d.]+\), test accuracy \d+\.\d\d%", first)
    metrics = {name: per_model(name, repo / "reports" / "metrics" / "evaluate")[name] for name in MODEL_NAMES}
    for name in MODEL_NAMES:
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
        seen = slice(0, metrics[name]["train"]["images"])  # evaluate.train_images, all of the tiny split here
        assert seen.stop == min(len(arrays["y_train"]), 10_000)
        assert metrics[name]["train"]["loss"] == pytest.approx(
            float(keras.losses.categorical_crossentropy(
                keras.utils.to_categorical(arrays["y_train"][seen], 10),
                model.predict(arrays["x_train"][seen].astype("float32"), verbose=0)).numpy().mean()), rel=1e-4)
        for figure in ("training_curves", "confusion_matrix", "misclassified"):
            assert (repo / "reports" / "figures" / "evaluate" / name / f"{figure}.png").stat().st_size > 5_000
        per_class = (repo / "reports" / "eval" / "per_class" / f"{name}.csv").read_text().splitlines()
        assert per_class[0] == "class,accuracy" and len(per_class) == 11
        # The training curves are DVCLive's: one step per epoch, train and eval.
        for split in ("train", "eval"):
            curves = (repo / "reports" / "live" / name / "plots" / "metrics" / split / "accuracy.tsv").read_text().splitlines()
            assert curves[0] == "step\taccuracy" and len(curves) == (2 if split == "eval" and validate_every(repo, name) >= 2 else 3)
    for chart in ("accuracy_vs_training_time.png", "robustness.png"):  # small, git-tracked
        assert 5_000 < (repo / "reports" / "charts" / chart).stat().st_size < 80_000
    timing = (repo / "reports" / "eval" / "accuracy_vs_time.csv").read_text().splitlines()
    assert timing[0] == "model,train_minutes,test_accuracy" and [t.split(",")[0] for t in timing[1:]] == MODEL_NAMES
    summary = (repo / "reports" / "summary.md").read_text()
    # The seed CNN's parameters at its default, two convolutions per block (509,322 with one)
    assert "| cnn |" in summary and "| mobilenet |" in summary and "| 1,285,706 |" in summary
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=repo, **env).stdout)
    evaluate = shown[""]["data"]["reports/metrics/evaluate/cnn.json"]["data"]  # the workspace's metrics
    assert evaluate["cnn"]["test"]["accuracy"] == metrics["cnn"]["test"]["accuracy"]
    status = run(["dvc", "status", "--json"], cwd=repo, **env)
    assert json.loads(status.stdout) == {}
    again = run(["dvc", "repro"], cwd=repo, **env)
    assert ran_stages(again.stdout) == set()


def test_changing_a_preview_param_reruns_only_augment_preview(pipeline_copy):
    repo, env, _ = pipeline_copy
    set_param(repo, "augment_preview.variants", 3)
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {"augment_preview"}


def changed_stages(repo, env):
    """The stages whose own deps or params changed (`dvc status`): a `dvc repro` reruns them and
    everything downstream of them, as test_branches checks on a real rerun of train@mobilenet."""
    return set(json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout))


def test_changing_a_models_param_reruns_only_its_training(pipeline_copy):
    """A model's own section retrains that model; its module's section every model built by the
    module (fast_robust's settings are fast's with its own laid over them)."""
    repo, env, _ = pipeline_copy
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qam", "tiny params"], cwd=repo)
    set_param(repo, "mobilenet.dropout", 0.3)
    assert changed_stages(repo, env) == {"train@mobilenet"}
    set_param(repo, "mobilenet.dropout", 0.2)
    set_param(repo, "fast_robust.train.epochs", 3)
    assert changed_stages(repo, env) == {"train@fast_robust"}
    set_param(repo, "fast.train.momentum", 0.8)
    assert changed_stages(repo, env) == {"train@fast_robust", "train@fast"}
    diff = json.loads(run(["dvc", "params", "diff", "--json"], cwd=repo, **env).stdout)["params.yaml"]
    assert set(diff) == {"fast_robust.train.epochs", "fast.train.momentum"}


def test_the_same_weights_under_another_path_do_not_retrain(pipeline_copy, tmp_path):
    """fetch_weights is keyed on the file's content: a copy elsewhere reruns the cheap copy
    stage, and nothing after it."""
    repo, env, _ = pipeline_copy
    moved = tmp_path / "elsewhere" / "renamed.weights.h5"
    moved.parent.mkdir()

    weights = yaml.safe_load((repo / "params.yaml").read_text())["fetch_weights"]["mobilenet"]
    moved.write_bytes(open(weights, "rb").read())
    set_param(repo, "fetch_weights.mobilenet", str(moved))
    # Each model's fetch stage reads the whole section (DVC refuses a param a model lacks): each
    # reruns, in seconds, and writes what it wrote before.
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {f"fetch_weights@{n}" for n in MODEL_NAMES}
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_changing_an_augmentation_param_does_not_rerun_prepare(pipeline_copy):
    """A model's own augment: retrains it alone; shared's, which every model's is laid over (DVC
    tracks the section, not which keys a model overrides), every model and the preview."""
    repo, env, _ = pipeline_copy
    set_param(repo, "cnn.augment.rotation_degrees", 5)
    assert changed_stages(repo, env) == {"train@cnn"}
    set_param(repo, "shared.augment.rotation_degrees", 5)
    registry = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    assert changed_stages(repo, env) == {"augment_preview", *(f"train@{name}" for name in registry)}


def test_one_models_change_reruns_that_models_stages_and_the_comparison_only(pipeline_copy):
    """A param of one model: every other model's stages stay up to date, and `dvc repro` reruns
    the model's chain, the comparison and the artifacts table."""
    repo, env, _ = pipeline_copy
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qam", "tiny params"], cwd=repo)
    set_param(repo, "cnn.dense_units", 16)
    assert changed_stages(repo, env) == {"train@cnn"}
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {
        *(f"{stage}@cnn" for stage in PER_MODEL if stage != "fetch_weights"), "compare", "artifacts_table"}
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}
    # (an edit to one model's module: test_registry.py)


def test_compare_with_metrics_of_an_older_format_is_one_line(pipeline_copy):
    from conftest import script

    repo, env, _ = pipeline_copy
    evaluated = repo / "reports" / "metrics" / "evaluate" / "cnn.json"
    older = json.loads(evaluated.read_text())
    del older["cnn"]["size_mb"]
    evaluated.write_text(json.dumps(older))
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["compare"]["cmd"].split()[2:]
    proc = run(["python", script("compare"), *cmd], cwd=repo, check=False, **env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ("compare: error: reports/metrics/evaluate/cnn.json lacks 'cnn.size_mb' (an older or damaged file); "
            "it is written by the 'evaluate@cnn' stage") in proc.stderr
