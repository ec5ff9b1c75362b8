"""make seeds (studies/seeds/seeds.py) and make stage-times (studies/stage_times/stage_times.py): the
spread behind an accuracy claim, and the whole pipeline's cost."""

import json
import os

import pytest

from conftest import REPO, run, script, set_param
import seeds
from cifar import spread
import stage_times


def test_the_table_gives_the_spread_and_a_single_runs_interval():
    runs = [{"model": "fast", "seed": s, "test_accuracy": a, "wall_time_s": t, "precision": "mixed_bfloat16",
             "cpu": "Intel", "source": "studies/seeds/seeds.py"} for s, a, t in [(43, 0.938, 1000.0), (42, 0.940, 1100.0), (44, 0.942, 1200.0)]]
    runs[1]["source"] = "pipeline (dvc repro)"
    row = spread.table(runs, 10_000, {"fast": "fast CNN"})["fast"]
    assert row["seeds"] == [42, 43, 44] and row["runs"] == 3
    assert row["test_accuracy"] == {"mean": 0.94, "std": 0.002, "min": 0.938, "max": 0.942}
    assert row["wall_time_s"]["std"] == 100.0
    low, high = row["single_run_95_interval"]  # Wilson at 94% of 10,000: about +-0.47 pp
    assert low == pytest.approx(0.9352, abs=2e-4) and high == pytest.approx(0.9445, abs=2e-4)
    assert row["pipeline_run"]["seed"] == 42
    assert spread.current(row, 0.940, 1100.0) and not spread.current(row, 0.941, 1100.0)  # a retrained model
    assert not spread.current(row, 0.940, 1234.5) and not spread.current(None, 0.94, 1100.0)
    assert spread.describe(row) == "94.00% ± 0.20% (3 seeds)"
    text = seeds.markdown({"fast": row}, 10_000)
    assert "| fast CNN | 3 (42, 43, 44) | 94.00% ± 0.20% | 93.80% – 94.20% |" in text
    # One run (the pipeline's own, before a sweep) has no spread: no std, and not shown as one.
    alone = spread.table(runs[1:2], 10_000, {"fast": "fast CNN"})["fast"]
    assert alone["runs"] == 1 and not spread.current(alone, 0.940, 1100.0)
    assert "| fast CNN | 1 (42) | 94.00% ± - | 94.00% – 94.00% | 18.3 ± - min |" in seeds.markdown({"fast": alone}, 10_000)


def test_a_sweep_needs_the_lock_s_recipe_and_tolerates_only_missing_outputs():
    absent = {"changed outs": {"models/trained/cnn.keras": "not in cache"}}
    assert seeds.pipeline_state("train@cnn", {}) == "current"
    assert seeds.pipeline_state("train@cnn", {"train@cnn": [absent]}) == "absent"
    assert seeds.pipeline_state("train@cnn", {"train@cnn": [{"changed outs": {"m.keras": "deleted"}}]}) == "absent"
    assert seeds.pipeline_state("train@cnn", {"train@cnn": [{"changed outs": {"m.keras": "modified"}}]}) is None
    assert seeds.pipeline_state("train@cnn", {"train@cnn": [{"changed deps": {"scripts/train.py": "modified"}}, absent]}) is None
    assert seeds.pipeline_state("train@cnn", {"train@cnn": [{"changed params": {"params.yaml": {"x": "modified"}}}]}) is None
    # missing data upstream is not a missing output of this stage: its deps changed too
    assert seeds.pipeline_state("train@cnn", {"prepare": [{"changed outs": {"d.npz": "deleted"}}],
                                              "train@cnn": [{"changed deps": {"d.npz": "deleted"}}]}) is None


def test_a_sweep_before_the_pipeline_ran_the_stage_says_what_to_run(tmp_path):
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prepare:\n    cmd: python scripts/prepare.py\n")
    with pytest.raises(SystemExit, match=r"has no record of train@cnn: run `dvc repro train@cnn` first"):
        seeds.recipe_id("train@cnn", tmp_path / "dvc.lock")


def test_a_sweep_reuses_the_pipelines_run_runs_the_other_seeds_as_dvc_experiments_and_skips_finished_ones(pipeline_copy):
    repo, env, _ = pipeline_copy
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run([*git, "add", "-A"], cwd=repo)
    run([*git, "commit", "-qm", "tiny pipeline", "--allow-empty"], cwd=repo)  # experiments are based on a commit
    (repo / "studies/seeds/runs.json").unlink(missing_ok=True)  # the reference run's, not this pipeline's
    proc = run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, **env)
    runs = json.loads((repo / "studies/seeds/runs.json").read_text())
    recipe = seeds.recipe_id("train@cnn", repo / "dvc.lock")
    experiment = f"seeds-cnn-43-{recipe[:8]}"
    assert [(r["seed"], r["source"]) for r in runs] == [(42, "pipeline (dvc repro)"), (43, f"dvc exp {experiment}")]
    assert runs[0]["recipe"] == runs[1]["recipe"] == recipe
    assert f"dvc exp run --temp -n {experiment} -S shared.seed=43 evaluate@cnn" in proc.stdout
    # The experiment's own metrics, as `dvc exp show` has them: the model trained with seed 43.
    exps = json.loads(run(["dvc", "exp", "show", "--json"], cwd=repo, **env).stdout)
    (data,) = [rev["data"] for c in exps for e in (c.get("experiments") or []) for rev in e["revs"]
               if rev.get("name") == experiment]
    assert data["params"]["params.yaml"]["data"]["shared"]["seed"] == 43
    trained = data["metrics"]["reports/metrics/train/cnn.json"]["data"]["cnn"]
    assert trained["wall_time_s"] > 0 and runs[1]["wall_time_s"] == trained["wall_time_s"]
    pipeline = json.loads((repo / "reports/metrics/train/cnn.json").read_text())["cnn"]
    assert runs[0]["wall_time_s"] == pipeline["wall_time_s"] != runs[1]["wall_time_s"]
    evaluated = json.loads((repo / "reports/metrics/evaluate/cnn.json").read_text())["cnn"]["test"]["accuracy"]
    assert runs[0]["test_accuracy"] == pytest.approx(evaluated, abs=1e-5)  # measured as evaluate measures it
    # A study: the workspace is untouched and up to date; the README's table shows the spread
    # beside the run it includes (make readme), the summary links the seed table.
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}
    run(["python", script("readme_results"), "--readme", "README.md"], cwd=repo, **env)
    rows = [line for line in (repo / "README.md").read_text().splitlines() if line.startswith("| ")]
    assert any(line.startswith("| seed CNN |") and "(2 seeds)" in line for line in rows)
    assert not any(line.startswith("| fast CNN") and "seeds)" in line for line in rows)
    assert "(../studies/seeds/seeds.md)" in (repo / "reports/summary.md").read_text()
    table = json.loads((repo / "studies/seeds/seeds.json").read_text())["cnn"]
    assert table["runs"] == 2 and table["test_accuracy"]["min"] <= table["test_accuracy"]["max"]
    again = run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, **env)
    assert "dvc exp run" not in again.stdout  # both runs are kept: nothing trains again
    (repo / "studies/seeds/runs.json").write_text(json.dumps(runs[:1]))  # a sweep cut after its experiment ran
    resumed = run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, **env)
    assert "dvc exp run" not in resumed.stdout and json.loads((repo / "studies/seeds/runs.json").read_text()) == runs
    # A fresh clone without the DVC cache: the pipeline's model is absent, its recorded run stands.
    (repo / "models/trained/cnn.keras").unlink()
    assert "dvc exp run" not in run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, **env).stdout
    (repo / "studies/seeds/runs.json").write_text(json.dumps(runs[1:]))  # and without it: no run to measure
    absent = run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, check=False, **env)
    assert absent.returncode != 0 and "train@cnn has no outputs here" in absent.stderr
    bad = run(["python", script("seeds"), "--models", "resnet"], cwd=repo, check=False, **env)
    assert bad.returncode != 0 and "unknown model(s) resnet" in bad.stderr
    set_param(repo, "shared.train.epochs", 1)  # another recipe: the sweep wants the pipeline's run first
    stale = run(["python", script("seeds"), "--models", "cnn", "--seeds", "2"], cwd=repo, check=False, **env)
    assert stale.returncode != 0 and "train@cnn is not up to date" in stale.stderr


def stage_metrics(root, seconds):
    """Metrics files under `root`/reports/metrics as the stages write them, each with its own
    `stage_s` (`seconds`: {stage@NAME: s}; export@NAME's in parity's file as export_stage_s)."""
    metrics = root / "reports/metrics"
    for stage, value in seconds.items():
        kind, _, name = stage.partition("@")
        file, key = stage_times.RECORDED.get(kind, ("prepare.json", "stage_s"))
        path = metrics / file.format(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        values = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**values, key: value, **({name: {"wall_time_s": value - 1}} if kind == "train" else {})}))


def test_stage_times_add_up_what_each_stage_records_and_compare_only_on_the_bench_host(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_times.outputs, "hardware", lambda: {"cpu": "Intel Xeon", "cpu_count": 2})
    stage_metrics(tmp_path, {"prepare": 10.0, "train@cnn": 600.0, "train@fast": 400.0, "robustness@cnn": 100.0,
                             "evaluate@cnn": 200.0, "export@cnn": 50.0, "parity@cnn": 100.0, "demo@fast": 40.0})
    (tmp_path / "reports/metrics/train/mobilenet.json").write_text(json.dumps({"mobilenet": {"wall_time_s": 300.0}}))
    ran, fits = stage_times.recorded(["cnn", "fast", "mobilenet"], tmp_path / "reports/metrics")
    assert ran["export@cnn"] == 50.0 and ran["parity@cnn"] == 100.0 and "robustness@fast" not in ran
    assert fits == {"train@mobilenet": 300.0}  # metrics from before stage_s: the fit's own time
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"environment": {"cpu": "Intel Xeon"}, "seed_recipe_float32_s": 1000.0}))
    result = stage_times.record(ran, fits, "dvc repro --force", bench)
    assert result["total_s"] == 1800.0 and result["training_s"] == 1300.0 and result["later_s"] == 490.0
    assert (result["total_vs_seed_recipe"], result["training_vs_seed_recipe"], result["later_vs_seed_recipe"]) == (
        1.8, 1.3, 0.49)
    assert result["models"]["cnn"] == {"training_s": 600.0, "later_s": 450.0, "later_vs_training": 0.75}
    assert result["training_fit_s"] == {"train@mobilenet": 300.0} and "wall_time_s" in result["training_source"]
    bench.write_text(json.dumps({"environment": {"cpu": "AMD EPYC"}, "seed_recipe_float32_s": 1000.0}))
    other = stage_times.record(ran, fits, "dvc repro", bench)
    assert other["seed_recipe_float32_s"] is None and other["total_vs_seed_recipe"] is None


def test_stage_times_of_one_model_run_its_stages_after_training_and_the_comparison(tmp_path, monkeypatch):
    """make stage-times MODEL=fast: `dvc repro --force --single-item` of fast's later stages (each
    records its time), then the comparison, timed; fast's sum against its own training."""
    monkeypatch.setattr(stage_times.outputs, "hardware", lambda: {"cpu": "Intel Xeon", "cpu_count": 2})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    stage_metrics(tmp_path, {"train@fast": 1000.0})
    (tmp_path / "bin").mkdir()
    dvc = tmp_path / "bin/dvc"  # records its arguments; a run of fast's stages writes their metrics
    dvc.write_text("#!/bin/sh\necho \"$*\" >> calls\ncase \"$*\" in *robustness@fast*) cp -r ready/reports . ;; esac\n")
    dvc.chmod(0o755)
    stage_metrics(tmp_path / "ready", {"train@fast": 1000.0, "robustness@fast": 150.0, "evaluate@fast": 100.0,
                                       "export@fast": 50.0, "parity@fast": 80.0, "demo@fast": 20.0})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr("sys.argv", ["stage_times.py", "--model", "fast", "--out", str(tmp_path / "stage_times.json")])
    stage_times.main()
    assert (tmp_path / "calls").read_text().splitlines() == [
        "repro --force --single-item export@fast parity@fast robustness@fast evaluate@fast demo@fast",
        "repro --force --single-item compare artifacts_table"]
    result = json.loads((tmp_path / "fast.json").read_text())
    assert set(result["stages_s"]) == {f"{s}@fast" for s in stage_times.LATER} and result["training_s"] == 1000.0
    assert result["later_s"] == pytest.approx(400.0 + result["comparison_s"], abs=0.11)
    assert result["later_vs_training"] == pytest.approx(result["later_s"] / 1000.0, abs=1e-3)
    assert not (tmp_path / "stage_times.json").exists()
    monkeypatch.setattr("sys.argv", ["stage_times.py", "--model", "resnet"])
    with pytest.raises(SystemExit, match="no model 'resnet'"):
        stage_times.main()


def write_models(folder, models, data):
    """NAME.json in `folder` for each model, as its own stage writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, metrics in models.items():
        (folder / f"{name}.json").write_text(json.dumps({name: metrics, "data": data}))


def test_the_small_folder_advice_names_the_best_model_on_both_folders_and_the_best_on_cifar10(tmp_path):
    import yaml

    import readme_results

    assert readme_results.small_folders(tmp_path) is None  # before make small-folders
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {"cnn": {"label": "seed CNN"}, "fast": {"label": "fast CNN"}}}))
    write_models(tmp_path / "reports/metrics/evaluate", {"cnn": {"test": {"accuracy": 0.88}}, "fast": {"test": {"accuracy": 0.94}}},
                 {"test_images": 10_000})
    rows = [{"folder": folder, "model": model, "label": label, "train_images": 640, "val_images": 160, "test_images": 200,
             "side": 128, "val_accuracy": val, "test_accuracy": test, "wall_time_s": 90.0, "precision": "float32"}
            for folder, model, label, val, test in [("digits", "cnn", "seed CNN", 0.95, 0.96), ("digits", "fast", "fast CNN", 0.97, 0.90),
                                                    ("cifar10_1000", "cnn", "seed CNN", 0.40, 0.42),
                                                    ("cifar10_1000", "fast", "fast CNN", 0.45, 0.44)]]
    (tmp_path / "studies/small_folder").mkdir(parents=True)
    (tmp_path / "studies/small_folder/advice.json").write_text(json.dumps(
        {"rows": rows, "commit": "0123456789abcdef", "mobilenet_weights": {"source": "stand_in.h5", "sha256": "0" * 64},
         "environment": {"cpu": "Intel Xeon", "cpu_count": 2}}))
    lines = readme_results.small_folders(tmp_path).splitlines()
    assert lines[0] == ("| model | digits (1,000): val / test, training | CIFAR-10 slice (1,000): val / test, training |")
    assert lines[2] == "| seed CNN | 95.0% / 96.0%, 1.5 min (float32) | 40.0% / 42.0%, 1.5 min (float32) |"
    # Chosen on val (fast: 0.71 to 0.675), though cnn's mean test accuracy is the higher (0.69 to 0.67).
    assert lines[-1].startswith("On a small folder, start with `fast`: the best val accuracy over both folders here. "
                                "On a large one (CIFAR-10's 40,000 training images), `fast`: ")
    assert "MobileNetV2 from the offline copy `stand_in.h5` (not Keras' ImageNet file), on Intel Xeon, 2 cores, code of commit 0123456" in lines[-1]


def test_the_readme_table_shows_a_spread_only_beside_the_run_it_includes(tmp_path):
    import yaml

    import readme_results

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {"fast": {"label": "fast CNN"}, "cnn": {"label": "seed CNN"}}}, sort_keys=False))
    metrics = tmp_path / "reports/metrics"
    (metrics / "train").mkdir(parents=True)
    write_models(metrics / "evaluate", {"fast": {"test": {"accuracy": 0.94}}, "cnn": {"test": {"accuracy": 0.8},
                                        "train": {"accuracy": 0.85, "images": 10_000}}}, {"test_images": 10_000})
    host = {"cpu": "Intel Xeon", "cpu_count": 2}
    for name, seconds in (("fast", 1100.0), ("cnn", 1500.0)):
        (metrics / f"train/{name}.json").write_text(json.dumps(
            {name: {"wall_time_s": seconds, "precision": "mixed_bfloat16"}, "environment": host}))
    runs = [{"model": m, "seed": s, "test_accuracy": a, "wall_time_s": t, "precision": "mixed_bfloat16", "cpu": "Intel Xeon",
             "source": "pipeline (dvc repro)" if s == 42 else "studies/seeds/seeds.py"}
            for m, s, a, t in [("fast", 42, 0.94, 1100.0), ("fast", 43, 0.938, 1000.0), ("fast", 44, 0.942, 1200.0),
                               ("cnn", 42, 0.79, 1500.0), ("cnn", 43, 0.81, 1400.0)]]  # cnn: an older run than evaluate's
    (tmp_path / "studies/seeds").mkdir(parents=True)
    (tmp_path / "studies/seeds/seeds.json").write_text(json.dumps(spread.table(runs, 10_000, {})))
    # The robustness stage's mean over its corruptions, where it measured the model.
    corruptions = {"fog": {"severity_1": 0.9, "severity_2": 0.8, "mean": 0.85}, "snow": {"severity_1": 0.7, "severity_2": 0.6}}
    write_models(metrics / "robustness", {"fast": {"mean_corruption_accuracy": 0.7559, "mean_corruption_interval_95_pp": 0.812,
                                                   "corruptions": corruptions}},
                 {"test_images": 1000})
    lines = readme_results.rows(tmp_path)
    assert lines[:2] == readme_results.HEADER
    assert lines[2] == ("| fast CNN | 94.00% | 93.52% – 94.45% | 94.00% ± 0.20% (3 seeds) | 75.59% ± 0.81 pp (mean of 2 kinds) | "
                        "18.3 min | mixed_bfloat16 | Intel Xeon, 2 cores |")
    assert "| seed CNN | 80.00% (seed: 86.73%) | 79.20% – 80.77% | 1 run | not measured | 25.0 min |" in lines[3]
    assert readme_results.cost(tmp_path) is None  # before make stage-times
    (tmp_path / "studies/stage_times").mkdir(parents=True)
    (tmp_path / "studies/stage_times/stage_times.json").write_text(json.dumps(
        {"total_s": 6000.0, "training_s": 4200.0, "total_vs_seed_recipe": 3.1234, "environment": host,
         "finished": "2026-12-04T10:00:00+00:00"}))
    assert readme_results.cost(tmp_path).startswith(
        "The whole pipeline, every stage from scratch (`make stage-times`, finished 2026-12-04), took 100 min "
        "(training 70 min) on Intel Xeon, 2 cores, 3.12x the seed recipe's float32 training time that host's")
    assert "the stages after training" not in readme_results.cost(tmp_path)  # a file from before the split
    (tmp_path / "studies/stage_times/stage_times.json").write_text(json.dumps(
        {"total_s": 6000.0, "training_s": 4200.0, "later_s": 1500.0, "total_vs_seed_recipe": 3.1234,
         "later_vs_seed_recipe": 0.781, "environment": host, "finished": "2026-12-04T10:00:00+00:00"}))
    assert ("measured then; the stages after training (evaluation, robustness, exports, parity, the demo) 25 min, 0.78x; "
            "a recipe changed") in readme_results.cost(tmp_path)
    (tmp_path / "studies/stage_times/stage_times.json").write_text(json.dumps(
        {"total_s": 6000.0, "training_s": 4200.0, "training_fit_s": {"train@cnn": 4200.0}, "later_s": 1500.0,
         "later_vs_seed_recipe": 0.781, "environment": host, "finished": "2026-12-04T10:00:00+00:00"}))
    assert readme_results.cost(tmp_path) == (  # the training stages not under the clock: said so
        "The stages after training (evaluation, robustness, exports, parity, the demo), each from scratch "
        "(`stage_times.py`, finished 2026-12-04), took 25 min on Intel Xeon, 2 cores, 0.78x the seed recipe's float32 "
        "training time that host's `make bench` measured; with the models' own training times (70 min), 100 min in "
        "all: [stage_times.json](studies/stage_times/stage_times.json).")
    # The seed CNN beside what the seed's text reports for it, with the reading the committed run
    # trained (dvc.lock; a lock from before the setting: the literal one) and the -S for the other.
    assert "| seed CNN | 80.00% (seed: 86.73%) |" in lines[3]
    assert readme_results.seed_line(tmp_path) == (
        "The seed reported 92.41% train, 87.12% best val (epoch 23) and 86.73% test accuracy for its CNN; ours gets "
        "85.00% train (on 10,000 training images) and 80.00% test, reading its text literally, one convolution per "
        "block (`cnn.convs_per_block: 1`). The other reading is `dvc exp run -S cnn.convs_per_block=2`; the two "
        "compared on val: [studies/fidelity/](studies/fidelity/fidelity.md).")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train@cnn": {
        "params": {"params.yaml": {"cnn": {"convs_per_block": 2}, "shared": {}}}}}}))
    assert "reading each block as two convolutions (the reading that follows the seed's val curve) " \
           "(`cnn.convs_per_block: 2`). The other reading is `dvc exp run -S cnn.convs_per_block=1`" in readme_results.seed_line(tmp_path)
    assert readme_results.advice(tmp_path) == (
        "For photos from the wild (noisy, blurred, compressed, in fog or snow), ship `fast`: 75.6% on the robustness "
        "stage's corrupted test images (mean of 2 kinds, 2 severities each), and the most accurate on clean ones too (94.00%).")
    # A sturdier model than the most accurate: both named, with the price in training time.
    write_models(metrics / "robustness", {"cnn": {"mean_corruption_accuracy": 0.79, "corruptions": corruptions}},
                 {"test_images": 1000})
    assert readme_results.advice(tmp_path) == (
        "For photos from the wild (noisy, blurred, compressed, in fog or snow), ship `cnn`: 79.0% on the robustness "
        "stage's corrupted test images (mean of 2 kinds, 2 severities each), against 75.6% for `fast`. On clean test images "
        "it gives 80.00% to `fast`'s 94.00%, for 1.36x its training time (25.0 min against 18.3); `fast` stays the choice "
        "for clean, well-lit pictures.")
    assert readme_results.block(tmp_path).endswith("stage_times.json).\n\n" + readme_results.advice(tmp_path) + "\n")
    # Once the seed table holds both models' current runs, their clean accuracy over seeds too.
    runs[3] = {**runs[3], "test_accuracy": 0.8}
    (tmp_path / "studies/seeds/seeds.json").write_text(json.dumps(spread.table(runs, 10_000, {})))
    assert ("On clean test images it gives 80.00% to `fast`'s 94.00% (over 2 and 3 seeds: 80.50% ± 0.71% to "
            "94.00% ± 0.20%), for 1.36x its training time") in readme_results.advice(tmp_path)


def test_stage_times_compare_again_after_a_later_bench(tmp_path):
    bench, out = tmp_path / "bench.json", tmp_path / "stage_times.json"
    out.write_text(json.dumps({"total_s": 3000.0, "environment": {"cpu": "Intel Xeon"}, "seed_recipe_float32_s": None,
                               "total_vs_seed_recipe": None}))
    bench.write_text(json.dumps({"environment": {"cpu": "Intel Xeon"}, "seed_recipe_float32_s": 1200.0}))
    run(["python", script("stage_times"), "--compare-only", "--out", str(out), "--bench", str(bench)], cwd=tmp_path)
    assert json.loads(out.read_text())["total_vs_seed_recipe"] == 2.5


def test_the_readme_states_the_float32_recipe_with_its_seeds_once_the_study_has_them(tmp_path):
    import yaml

    import readme_results

    muon = {"train": {"epochs": 10, "muon": {"learning_rate": 0.24}}}
    values = {"models": {"fast": {"tta": 2}}, "fast": {"float32": None}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "studies/float32").mkdir(parents=True)
    runs = {str(seed): {"test_accuracy_by_tta": {"0": 0.92, "1": 0.93, "2": acc}} for seed, acc in ((42, 0.935), (1, 0.937))}
    (tmp_path / "studies/float32/frontier.json").write_text(json.dumps({
        "candidates": {"10 epochs, Muon": {"settings": muon, "epochs": 10, "seeds": runs}},
        "rates": {"host": {"cpu": "AMD EPYC"}, "rounds": 2, "seed_recipe_img_per_s": 500.0, "seed_recipe_epochs": 25,
                  "img_per_s": {"10 epochs, Muon": 250.0}}}))
    assert readme_results.float32_line(tmp_path) is None  # fast.float32 is null: one recipe in every precision
    values["fast"]["float32"] = muon
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    assert readme_results.float32_line(tmp_path) == (
        "Where a CPU has no bfloat16 (every model then trains in float32), the fast model trains with its float32 "
        "recipe (`fast.float32`: 10 epochs, Muon): 93.60% ± 0.14% test accuracy over 2 seeds (test-time augmentation 2), "
        "in a predicted 0.80x the "
        "seed recipe's float32 training time on AMD EPYC (`make bench`'s probe, 2 rounds); the frontier it was chosen "
        "from, on val: [studies/float32/frontier.md](studies/float32/frontier.md).")
