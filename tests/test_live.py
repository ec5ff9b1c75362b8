"""DVCLive: a training stage logs every epoch as it goes, so `dvc exp show` shows the epoch
metrics of a `dvc exp run` while it runs, and the log's files are the training curves."""

import json
import subprocess
import time

import pytest

from conftest import run, run_env

pytestmark = pytest.mark.e2e

EPOCHS = 15


def live_metrics(repo, env):
    """The workspace experiment's DVCLive metrics in `dvc exp show`, and whether it is running."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=repo, **env).stdout)
    for row in shown:
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp["revs"]:
                metrics = rev["data"]["metrics"].get("reports/live/cnn/metrics.json", {}).get("data")
                if metrics:
                    return metrics, state
    return None, None


def test_dvc_exp_show_follows_a_running_experiment_epoch_by_epoch(pipeline_copy):
    repo, env, _ = pipeline_copy
    command = ["dvc", "exp", "run", "train@cnn", "-S", f"shared.train.epochs={EPOCHS}",
               "-S", "shared.train.early_stopping_patience=1000"]
    experiment = subprocess.Popen(command, cwd=repo, env=run_env(**env), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        while experiment.poll() is None and len(seen) < 2:
            metrics, state = live_metrics(repo, env)
            if metrics and state == "running" and (not seen or metrics["step"] > seen[-1]["step"]):
                seen.append(metrics)
            time.sleep(0.5)
    finally:
        output, _ = experiment.communicate(timeout=600)
    assert experiment.returncode == 0, output[-3000:]
    # Two distinct epochs seen while it ran, each with its metrics, before the last.
    assert len(seen) == 2, f"dvc exp show never showed two epochs of the running experiment: {seen}"
    assert seen[0]["step"] < seen[1]["step"] < EPOCHS - 1
    assert {"accuracy", "loss", "learning_rate"} <= set(seen[1]["train"]) and "accuracy" in seen[1]["eval"]
    final = json.loads((repo / "reports" / "live" / "cnn" / "metrics.json").read_text())
    assert final["step"] == EPOCHS - 1
    curve = (repo / "reports" / "live" / "cnn" / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text().splitlines()
    assert len(curve) == EPOCHS + 1  # every epoch: the run's one record
