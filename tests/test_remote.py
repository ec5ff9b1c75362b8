"""Sharing results through a DVC remote: a teammate pulls what a run made instead of training."""

import json
import re

import pytest

from conftest import REPO, copy_repo, run

pytestmark = pytest.mark.e2e
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
PHOTO = REPO / "tests" / "data" / "chelsea_cat.jpg"


def test_a_teammate_pulls_every_output_and_recomputes_nothing(pipeline, tmp_path):
    repo, env, _ = pipeline
    run(["dvc", "repro"], cwd=repo, **env)  # the workspace matches its params, whatever ran before
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], cwd=repo)
    # Credentials (here a dummy one) go to the git-ignored .dvc/config.local, never into git.
    run(["dvc", "remote", "modify", "--local", "team", "jobs", "2"], cwd=repo)
    run(["dvc", "push"], cwd=repo)
    run([*GIT, "add", "-A"], cwd=repo)
    run([*GIT, "commit", "-qm", "results of a run, shared through the team remote"], cwd=repo)
    assert "jobs" not in run(["git", "show", "HEAD:.dvc/config"], cwd=repo).stdout
    assert "team" in run(["git", "show", "HEAD:.dvc/config"], cwd=repo).stdout

    # Each model's export by its name in dvc.yaml's artifacts (DVC's model registry): a version
    # registered with gto (a git tag), then fetched from the remote.
    for name in ("cnn", "fast_robust"):
        run(["gto", "register", name], cwd=repo)
        run(["dvc", "artifacts", "get", str(repo), name, "-o", str(tmp_path / "shipped" / name)], cwd=tmp_path)
        got = tmp_path / "shipped" / name
        assert (got / "metadata.json").read_bytes() == (repo / "models" / "export" / name / "metadata.json").read_bytes()
        assert (got / f"{name}_int8.tflite").is_file() and (got / "tfjs" / "model.json").is_file()
    bad = run(["dvc", "artifacts", "get", str(repo), "resnet", "-o", str(tmp_path / "none")], cwd=tmp_path, check=False)
    assert bad.returncode != 0 and not (tmp_path / "none").exists()

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], cwd=tmp_path)
    assert not (clone / "models" / "trained" / "cnn.keras").exists()
    # No offline inputs in the environment: nothing may need the archive or the weights.
    pulled = run(["make", "-o", "setup", "pull"], cwd=clone)
    assert "Data and pipelines are up to date." in pulled.stdout
    for rel in ("models/trained/cnn.keras", "models/trained/fast.keras", "models/export/mobilenet/metadata.json",
                "data/prepared/cifar10.npz"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel

    assert "Running stage" not in run(["dvc", "repro"], cwd=clone).stdout
    exported = run(["make", "-o", "setup", "export"], cwd=clone)
    assert "Running stage" not in exported.stdout
    assert json.loads(run(["dvc", "metrics", "show", "--json"], cwd=clone).stdout) == \
        json.loads(run(["dvc", "metrics", "show", "--json"], cwd=repo).stdout)

    # predict.py's default: the most accurate model of the pulled metrics, from the pulled files.
    document = json.loads(run(["python", "scripts/tools/predict.py", "--json", str(PHOTO)], cwd=clone).stdout)
    assert (clone / document["model"]).exists()
    assert len(document["results"][0]["top"]) == 3 and document["results"][0]["top"][0]["probability"] > 0
    int8 = run(["python", "scripts/tools/predict.py", "--model", "models/export/cnn/cnn_int8.tflite", str(PHOTO)], cwd=clone)
    assert int8.stdout.startswith(str(PHOTO))


def test_make_pull_without_a_remote_says_so_in_one_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    proc = run(["make", "-s", "-o", "setup", "pull"], cwd=repo, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert len(lines) == 1 and "no DVC remote configured" in lines[0] and "dvc remote add -d" in lines[0]
