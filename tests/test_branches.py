"""The cross-branch workflow users rely on: dvc metrics/params/plots diff and dvc exp."""

import json
import re
import shutil

import pytest
import yaml

from conftest import REPO, run, script, set_param, MODEL_NAMES

pytestmark = pytest.mark.e2e
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@pytest.fixture(scope="module")
def repo(pipeline, tmp_path_factory):
    """The session's tiny pipeline run, copied (its DVC cache with it) and committed on main."""
    source, env, first = pipeline
    assert "export@cnn" in first and "export@mobilenet" in first
    repo = tmp_path_factory.mktemp("branches") / "repo"
    shutil.copytree(source, repo, symlinks=True)
    assert "up to date" in run(["dvc", "status"], cwd=repo, **env).stdout
    run([*GIT, "add", "-A"], cwd=repo)
    run([*GIT, "commit", "-qm", "tiny run"], cwd=repo)
    return repo, env


def test_diff_across_branches_and_experiments(repo, tmp_path):
    repo, env = repo
    before = yaml.safe_load((repo / "params.yaml").read_text())["mobilenet"]["dropout"]
    assert before != 0.5
    run(["git", "checkout", "-q", "-b", "more-dropout"], cwd=repo)
    set_param(repo, "mobilenet.dropout", 0.5)
    ran = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro"], cwd=repo, **env).stdout))
    # Only the fine-tuning and what reads its model, nothing of the other models.
    assert ran == {*(f"{stage}@mobilenet" for stage in ("train", "robustness", "evaluate", "export", "parity", "demo")),
                   "compare", "artifacts_table"}
    run([*GIT, "add", "-A"], cwd=repo)
    run([*GIT, "commit", "-qm", "dropout 0.5"], cwd=repo)

    params = json.loads(run(["dvc", "params", "diff", "main", "more-dropout", "--json"], cwd=repo).stdout)
    changed = params["params.yaml"]["mobilenet.dropout"]
    assert (changed["old"], changed["new"]) == (before, 0.5)

    metrics = json.loads(run(["dvc", "metrics", "diff", "main", "more-dropout", "--all", "--json"], cwd=repo).stdout)
    tuned = metrics["reports/metrics/train/mobilenet.json"]
    assert set(tuned["mobilenet.best_val_accuracy"]) >= {"old", "new"}
    assert {"old", "new"} <= set(metrics["reports/metrics/evaluate/mobilenet.json"]["mobilenet.test.accuracy"])
    cnn = metrics["reports/metrics/evaluate/cnn.json"]["cnn.test.accuracy"]
    assert cnn["old"] == cnn["new"]  # CNN not retrained
    # Only pipeline results: the studies (bench, int8, sizes) are not DVC metrics.
    assert all(path.startswith(("reports/metrics/", "reports/live/")) for path in metrics), sorted(metrics)
    assert {"reports/live/mobilenet/metrics.json", "reports/metrics/robustness/mobilenet.json"} <= set(metrics)
    exported = metrics["reports/metrics/export/cnn.json"]  # nor re-exported
    assert exported["artifacts.tflite_int8.accuracy"]["old"] == exported["artifacts.tflite_int8.accuracy"]["new"]

    out = tmp_path / "plots"
    run(["dvc", "plots", "diff", "main", "more-dropout", "-o", str(out)], cwd=repo)
    html = (out / "index.html").read_text()
    assert "per-class test accuracy" in html
    assert "reports_live_mobilenet_plots_metrics_eval_accuracy_tsv" in html  # DVCLive's training curves
    for name in MODEL_NAMES:  # one plot per model file of each plot folder
        assert f"reports_eval_confusion_{name}_csv" in html and f"reports_eval_per_class_{name}_csv" in html

    # Offline viewing: the template inlines vega from node_modules instead of the CDN.
    template = tmp_path / "template.html"
    run(["python", script("plots_template"), "--out", str(template)], cwd=REPO)
    run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(tmp_path / "offline")], cwd=repo)
    offline = (tmp_path / "offline" / "index.html").read_text()
    assert "cdn.jsdelivr" not in offline and "vegaEmbed" in offline and "per-class test accuracy" in offline

    # An experiment on a param only evaluate reads: the cheapest rerun that changes a metric.
    run(["dvc", "exp", "run", "-S", "evaluate.train_images=100"], cwd=repo, **env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=repo).stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["evaluate"]["train_images"] == 100
    assert data["metrics"]["reports/metrics/evaluate/mobilenet.json"]["data"]["mobilenet"]["train"]["images"] == 100
