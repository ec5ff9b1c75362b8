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


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


def validate_every(repo, name):
    """The model's epochs between validation passes: its own training settings', else shared.train's."""
    from cifar import models

    own = models.entry(name, repo / "params.yaml")[1].get("train", {})
    values = yaml.safe_load((repo / "params.yaml").read_text())
    return own.get("validate_every", values["shared"]["train"].get("validate_every", 1))


def test_repro_runs_every_stage_and_leaves_status_clean(pipeline):
    repo, env, first = pipeline
    registry = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    assert ran_stages(first) == {"download", "prepare", "augment_preview", "fetch_weights", "robustness", "evaluate",
                                 "artifacts_table",
                                 *(f"{stage}@{name}" for name in registry for stage in ("train", "export", "parity", "demo"))}
    assert (repo / "data" / "prepared" / "cifar10.npz").is_file()
    table = (repo / "reports" / "artifacts.md").read_text()
    export = yaml.safe_load((repo / "params.yaml").read_text())["export"]
    int16, floats = export["int8_int16_layers"], export["int8_float_layers"]
    for label in (entry["label"] for entry in registry.values()):
        # The int8 candidate export chose on val (which one depends on the tiny model's weights),
        # and whether it is integer-only: yes for int8 and int16 activations, no with float layers.
        assert re.search(rf"\| {re.escape(label)} \| TF-Lite int8 \(((integer only|int16 worst{int16})\) \| LiteRT \| yes"
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


def test_robustness_and_calibration_for_every_model(pipeline):
    repo, env, first = pipeline
    robust = json.loads((repo / "reports" / "metrics" / "robustness.json").read_text())
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert robust["data"]["test_images"] == 40  # robustness.images 1000 > the 40 test images: all of them
    corruptions = yaml.safe_load((repo / "params.yaml").read_text())["robustness"]["corruptions"]
    assert len(corruptions) == 15 and corruptions[:10] == ["gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur",
                                                           "jpeg", "pixelate", "brightness", "darken", "contrast", "fog"]
    for name in MODEL_NAMES:
        result = robust[name]
        assert list(result["corruptions"]) == corruptions
        cells = [v for c in result["corruptions"].values() for k, v in c.items() if k.startswith("severity_")]
        assert len(cells) == 75 and result["mean_corruption_accuracy"] == pytest.approx(sum(cells) / 75)
        # The original ten's mean, kept for continuity with the earlier reports.
        original = [v for c in corruptions[:10] for k, v in result["corruptions"][c].items() if k.startswith("severity_")]
        assert result["mean_corruption_accuracy_original_10"] == pytest.approx(sum(original) / 50)
        # The clean accuracy of the robustness stage is evaluate's test accuracy (the same images).
        assert result["clean_accuracy"] == pytest.approx(evaluated[name]["test"]["accuracy"])
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
        figure = repo / "reports" / "figures" / "evaluate" / f"{name}_reliability.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    summary = (repo / "reports" / "summary.md").read_text()
    assert "## Robustness and calibration" in summary and "mean corruption accuracy" in summary
    # Each model's single-run interval; the spread over seeds is a study's, linked, never read.
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert "## One run, and the spread over seeds" in summary and "(studies/seeds/seeds.md)" in summary
    for name in MODEL_NAMES:
        low, high = evaluated[name]["test"]["single_run_95_interval"].values()
        assert low <= evaluated[name]["test"]["accuracy"] <= high and high - low > 0.05  # 40 test images
        assert "seeds" not in evaluated[name]
    assert "Running stage" not in run(["dvc", "repro", "robustness"], cwd=repo, **env).stdout


def test_evaluate_outputs(pipeline):
    repo, env, first = pipeline
    assert re.search(r"cnn: train accuracy \d+\.\d\d% \(loss [\d.]+\), test accuracy \d+\.\d\d%", first)
    metrics = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
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
            assert (repo / "reports" / "figures" / "evaluate" / f"{name}_{figure}.png").stat().st_size > 5_000
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
    evaluate = shown[""]["data"]["reports/metrics/evaluate.json"]["data"]  # the workspace's metrics
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
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {"fetch_weights"}
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_changing_an_augmentation_param_does_not_rerun_prepare(pipeline_copy):
    """The seed's transforms feed the seed CNN and MobileNetV2; the fast models have their own."""
    repo, env, _ = pipeline_copy
    set_param(repo, "shared.augment.rotation_degrees", 5)
    assert changed_stages(repo, env) == {"augment_preview", "train@cnn", "train@mobilenet"}


def stage_commands(repo):
    """{stage: (its command, every path it writes)} for the stages of dvc.yaml that write two or
    more outputs, foreach stages expanded over the registry."""
    models = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    found = {}
    for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        keys = list(models) if "foreach" in stage else [None]
        for key in keys:
            body = json.dumps(stage.get("do", stage))
            if key:
                body = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(models[key][m.group(1)]), body.replace("${key}", key))
            body = json.loads(body)
            written = [next(iter(o)) if isinstance(o, dict) else o
                       for kind in ("outs", "metrics", "plots") for o in body.get(kind, [])]
            if len(written) >= 2:
                found[f"{name}@{key}" if key else name] = (body["cmd"], written)
    return found


def fingerprint(path):
    """The bytes of a file, or of every file under a folder, by relative name."""
    if path.is_file():
        return path.read_bytes()
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_stage_that_fails_after_its_first_write_changes_no_output(pipeline_copy, monkeypatch):
    """Every stage with several outputs, run in this process with a failure injected when it
    stages its second output: no output has changed, nothing is left beside them, and DVC
    still finds the workspace up to date."""
    import runpy
    import shlex
    import shutil
    import sys

    from cifar import outputs

    repo, env, _ = pipeline_copy
    commands = stage_commands(repo)
    assert {"prepare", "train@cnn", "train@fast", "train@mobilenet", "robustness", "evaluate",
            "artifacts_table"} <= set(commands)
    monkeypatch.chdir(repo)
    for key, value in env.items():  # the offline inputs, as `dvc repro` got them
        monkeypatch.setenv(key, value)
    real_path = outputs.StageOutputs.path
    for name, (cmd, written) in commands.items():
        before = {path: fingerprint(repo / path) for path in written}
        staged = []

        def failing(self, final, is_dir=False):
            staged.append(final)
            if len(staged) == 2:
                raise outputs.StageError("injected: the disk filled up")
            return real_path(self, final, is_dir)

        monkeypatch.setattr(outputs.StageOutputs, "path", failing)
        args = shlex.split(cmd)[1:]
        monkeypatch.setattr(sys, "argv", args)
        with pytest.raises(SystemExit) as stopped:
            runpy.run_path(args[0], run_name="__main__")
        assert "injected: the disk filled up" in str(stopped.value), (name, stopped.value)
        assert {path: fingerprint(repo / path) for path in written} == before, name
        shutil.rmtree(repo / "models" / ".resume", ignore_errors=True)
    monkeypatch.setattr(outputs.StageOutputs, "path", real_path)
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_evaluate_with_robustness_metrics_of_an_older_format_is_one_line_and_keeps_its_outputs(pipeline_copy):
    from conftest import script

    repo, env, _ = pipeline_copy
    robustness = repo / "reports" / "metrics" / "robustness.json"
    older = json.loads(robustness.read_text())
    del older["data"]
    robustness.write_text(json.dumps(older))
    figures = repo / "reports" / "figures" / "evaluate"
    before = fingerprint(figures)
    cmd = stage_commands(repo)["evaluate"][0].split()[2:]
    proc = run(["python", script("evaluate"), *cmd], cwd=repo, check=False, **env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "evaluate: error: reports/metrics/robustness.json lacks 'data.test_images'" in proc.stderr
    assert fingerprint(figures) == before
