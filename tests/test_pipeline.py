"""End to end: the real `dvc repro` in a temporary copy of the repository, on synthetic data."""

import json
import re

import pytest
import yaml

import synthetic
from conftest import copy_repo, run

pytestmark = pytest.mark.e2e


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(repo, dotted, value):
    path = repo / "params.yaml"
    values = yaml.safe_load(path.read_text())
    *parents, key = dotted.split(".")
    node = values
    for part in parents:
        node = node[part]
    node[key] = value
    path.write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A repository copy after a first `dvc repro` on a synthetic archive."""
    root = tmp_path_factory.mktemp("pipeline")
    archive = synthetic.write_archive(root / "cifar-10-python.tar.gz")
    env = {"CIFAR10_ARCHIVE": str(archive), "CIFAR10_SHA256": synthetic.sha256(archive)}
    repo = copy_repo(root / "repo")
    first = run(["dvc", "repro"], cwd=repo, **env)
    return repo, env, first.stdout


def test_repro_runs_every_stage_and_leaves_status_clean(pipeline):
    repo, env, first = pipeline
    assert {"download", "prepare", "augment_preview"} <= ran_stages(first)
    assert (repo / "data" / "prepared" / "cifar10.npz").is_file()
    assert (repo / "reports" / "figures" / "augment_preview.png").stat().st_size > 10_000
    counts = json.loads((repo / "reports" / "metrics" / "prepare.json").read_text())["counts"]
    assert counts == {"train": 160, "val": 40, "test": 40}
    status = run(["dvc", "status", "--json"], cwd=repo, **env)
    assert json.loads(status.stdout) == {}
    again = run(["dvc", "repro"], cwd=repo, **env)
    assert ran_stages(again.stdout) == set()


def test_changing_a_preview_param_reruns_only_augment_preview(pipeline):
    repo, env, _ = pipeline
    set_param(repo, "augment_preview.variants", 3)
    assert ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout) == {"augment_preview"}


def test_changing_an_augmentation_param_does_not_rerun_prepare(pipeline):
    repo, env, _ = pipeline
    set_param(repo, "shared.augment.rotation_degrees", 5)
    ran = ran_stages(run(["dvc", "repro"], cwd=repo, **env).stdout)
    assert "augment_preview" in ran and not {"download", "prepare"} & ran
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}
