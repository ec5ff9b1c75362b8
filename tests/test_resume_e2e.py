"""A real `dvc repro`, killed with SIGKILL in the middle of training and run again, ends with the
history of an uninterrupted run, to the tolerance docs/training.md states (1e-4 on CPU): the seed CNN
(its plateau and early-stopping counters replayed), the fast model (lookahead's slow weights
restored) and MobileNetV2 killed in its second phase. A kill followed by an edit of the model's
own module starts over instead of resuming under the new code."""

import json
import os
import signal
import subprocess
import time

import pytest

import synthetic
from conftest import copy_repo, default_phases, history, mobilenet_weights, run, run_env, set_param

pytestmark = pytest.mark.e2e
TOLERANCE = 1e-4  # docs/training.md, "Resume"
# model: (its stage, the backup whose epoch tells how far training is, the epoch to kill after,
# the line the rerun prints)
MODELS = {
    "cnn": ("train@cnn", "cnn/backup", 2, "Resuming at epoch 3: replayed 2 finished epochs"),
    "fast": ("train@fast", "fast/backup", 2, "Resuming at epoch 3: replayed 2 finished epochs"),
    "mobilenet": ("train@mobilenet", "mobilenet/top/backup", 1, "Resuming at epoch 2: replayed 1 finished epochs"),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    archive = synthetic.write_archive(root / "cifar-10-python.tar.gz", per_batch=100)
    repo = copy_repo(root / "repo")
    env = {"CIFAR10_ARCHIVE": str(archive), "CIFAR10_SHA256": synthetic.sha256(archive)}
    set_param(repo, "shared.train.epochs", 4)
    set_param(repo, "cnn.filters", [8, 16, 32])
    set_param(repo, "cnn.dense_units", 32)
    set_param(repo, "fast.widths", [8, 16, 16])
    set_param(repo, "fast.whiten_images", 200)
    set_param(repo, "models.fast.tta", 0)
    set_param(repo, "fast.float32", None)  # the same recipe where the CPU has no bfloat16
    for key, value in {"epochs": 5, "batch_size": 64, "validate_every": 1}.items():
        set_param(repo, f"fast.train.{key}", value)
    set_param(repo, "fetch_weights.mobilenet", str(mobilenet_weights(root)))
    set_param(repo, "mobilenet.input_size", 32)
    head, top = default_phases(repo)
    set_param(repo, "mobilenet.phases", [{**head, "epochs": 1}, {**top, "epochs": 3}])
    return repo, env


def kill_after(repo, env, stage, backup, epoch):
    """Start `dvc repro` of `stage` and SIGKILL it once `backup` holds epoch `epoch` (the next
    one is running). Returns the epoch the backup held at the kill."""
    backed_up = repo / "models" / ".resume" / backup / "training_metadata.json"
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                            env=run_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline, seen = time.monotonic() + 300, 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = json.loads(backed_up.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            pass
        if seen >= epoch:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    return seen


@pytest.mark.parametrize("name", list(MODELS))
def test_a_killed_repro_resumes_to_the_uninterrupted_history(repo, name):
    repo, env = repo
    stage, backup, epoch, resuming = MODELS[name]
    run(["dvc", "repro", stage], cwd=repo, **env)
    live = repo / "reports" / "live" / name / "plots" / "metrics"
    straight_live = {p.relative_to(live): p.read_text().splitlines() for p in live.rglob("*.tsv")}

    assert kill_after(repo, env, stage, backup, epoch) == epoch
    assert not (repo / "models" / "trained" / f"{name}.keras").exists()

    # The same command as the killed run: a plain `dvc repro` would check the straight run's outputs
    # out of the cache (dvc.lock still records them, and nothing changed) instead of training.
    again = run(["dvc", "repro", "--force", "--single-item", stage], cwd=repo, **env)
    assert resuming in again.stdout, again.stdout
    assert not (repo / "models" / ".resume" / name).exists()
    # DVCLive's log, the run's one record: the finished epochs replayed, then the rest, step by
    # step, every metric (loss, accuracy, val_loss, val_accuracy, learning rate) as the straight run's.
    resumed_live = {p.relative_to(live): p.read_text().splitlines() for p in live.rglob("*.tsv")}
    assert set(resumed_live) == set(straight_live)
    for path, lines in straight_live.items():
        if path.name in ("train_s.tsv", "epoch_s.tsv"):  # seconds differ from run to run
            continue
        assert [l.split("\t")[0] for l in resumed_live[path]] == [l.split("\t")[0] for l in lines], path
        for a, b in zip(lines[1:], resumed_live[path][1:]):
            assert float(a.split("\t")[1]) == pytest.approx(float(b.split("\t")[1]), abs=TOLERANCE), path
    assert run(["dvc", "status", stage], cwd=repo, **env).stdout.strip().endswith("up to date.")


def test_an_edit_of_the_models_module_between_kill_and_rerun_starts_over(repo):
    """The fast model's builder module (imported by name from the registry, after the identity
    was once taken) is part of the resume identity, because the stage declares it in dvc.yaml:
    the rerun does not continue the old weights under the new code."""
    repo, env = repo
    run(["dvc", "repro", "prepare"], cwd=repo, **env)
    assert kill_after(repo, env, "train@fast", "fast/backup", 1) >= 1
    module = repo / "scripts" / "cifar" / "models" / "fast.py"
    module.write_text(module.read_text() + "\n# an edit after the kill\n")
    again = run(["dvc", "repro", "train@fast"], cwd=repo, **env)
    assert "Discarding resume state" in again.stdout and "(changed: code)" in again.stdout, again.stdout
    assert "Resuming at epoch" not in again.stdout
    assert len(history(repo, "fast")) == 5
