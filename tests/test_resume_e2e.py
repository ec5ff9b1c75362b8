"""A real `dvc repro`, killed with SIGKILL during epoch 3 and run again, ends with the history of
an uninterrupted run, to the tolerance the README states (1e-4 on CPU)."""

import csv
import json
import os
import signal
import subprocess
import time

import pytest

import synthetic
from conftest import copy_repo, run, run_env, set_param

pytestmark = pytest.mark.e2e
TOLERANCE = 1e-4  # README, "Resume"


def history(repo):
    with open(repo / "reports" / "history" / "cnn.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    archive = synthetic.write_archive(root / "cifar-10-python.tar.gz", per_batch=100)
    repo = copy_repo(root / "repo")
    env = {"CIFAR10_ARCHIVE": str(archive), "CIFAR10_SHA256": synthetic.sha256(archive)}
    set_param(repo, "shared.train.epochs", 4)
    set_param(repo, "train_cnn.filters", [8, 16, 32])
    set_param(repo, "train_cnn.dense_units", 32)
    return repo, env


def test_a_killed_repro_resumes_to_the_uninterrupted_history(repo):
    repo, env = repo
    run(["dvc", "repro", "train_cnn"], cwd=repo, **env)
    straight = history(repo)
    assert len(straight) == 4

    backed_up = repo / "models" / ".resume" / "cnn" / "backup" / "training_metadata.json"
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train_cnn"], cwd=repo,
                            env=run_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline, epoch = time.monotonic() + 300, 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            epoch = json.loads(backed_up.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            pass
        if epoch >= 2:  # epochs 1 and 2 are done and backed up: epoch 3 is running
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert epoch == 2 and not (repo / "models" / "trained" / "cnn.keras").exists()

    again = run(["dvc", "repro", "train_cnn"], cwd=repo, **env)
    assert "Resuming at epoch 3: replayed 2 finished epochs" in again.stdout, again.stdout
    resumed = history(repo)
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in straight] == ["1", "2", "3", "4"]
    for a, b in zip(straight, resumed):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=TOLERANCE), (key, a, b)
    assert not (repo / "models" / ".resume" / "cnn").exists()
    assert run(["dvc", "status", "train_cnn"], cwd=repo, **env).stdout.strip().endswith("up to date.")
