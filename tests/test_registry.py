"""The model registry is the one list: a toy model added in a copy of the repository (a builder
in a module of its own, a params section, a registry entry, a training stage) is trained,
evaluated, exported and parity-checked by `dvc repro` with no other file edited, and nothing
that was already up to date reruns."""

import json
import re
import shutil

import pytest
import yaml

from conftest import run

pytestmark = pytest.mark.e2e

TOY_BUILDER = '''"""A toy model for the registry test."""

import keras
from keras import layers

from cifar.data import IMAGE_SHAPE, NUM_CLASSES


def build(section):
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE, name="image"),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(section["filters"], 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
    ], name="toy")
'''


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def toy_repo(pipeline, tmp_path_factory):
    """A copy of the shared tiny pipeline (outputs and DVC cache included) with a toy model added."""
    source, env, _ = pipeline
    repo = tmp_path_factory.mktemp("registry") / "repo"
    shutil.copytree(source, repo, symlinks=True)
    (repo / "scripts" / "cifar" / "toy.py").write_text(TOY_BUILDER)

    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["models"]["toy"] = {"stage": "train_toy", "builder": "cifar.toy:build", "params": "toy", "label": "toy CNN"}
    values["toy"] = {"filters": 4}
    (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    pipeline_file = yaml.safe_load((repo / "dvc.yaml").read_text())
    stage = json.loads(json.dumps(pipeline_file["stages"]["train_cnn"]).replace("cnn", "toy"))
    stage["cmd"] = stage["cmd"].replace("train_toy.py", "train_cnn.py")
    stage["deps"] = [d.replace("train_toy.py", "train_cnn.py") for d in stage["deps"]] + ["scripts/cifar/toy.py"]
    stage["params"] = ["shared", "models.toy", "toy"]
    pipeline_file["stages"]["train_toy"] = stage
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline_file, sort_keys=False))
    return repo, env, run(["dvc", "repro"], cwd=repo, **env).stdout


def test_a_registered_model_goes_through_every_later_stage(toy_repo):
    repo, env, output = toy_repo
    assert ran_stages(output) == {"train_toy", "robustness", "evaluate", "export@toy", "parity@toy", "artifacts_table"}
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert set(evaluated) >= {"cnn", "mobilenet", "toy"} and "accuracy" in evaluated["toy"]["test"]
    parity = json.loads((repo / "reports" / "metrics" / "export" / "toy.json").read_text())
    assert parity["model"] == "toy" and set(parity["artifacts"]) >= {"keras", "saved_model", "tflite_int8", "tfjs"}
    meta = json.loads((repo / "models" / "export" / "toy" / "metadata.json").read_text())
    assert meta["label"] == "toy CNN"
    # Its plot data as for the other models: two epochs of curves, 40 test predictions, 10 classes.
    for folder, lines in (("accuracy", 3), ("loss", 3), ("lr", 3), ("confusion", 41), ("per_class", 11)):
        ours = (repo / "reports" / "eval" / folder / "toy.csv").read_text().splitlines()
        theirs = (repo / "reports" / "eval" / folder / "cnn.csv").read_text().splitlines()
        assert len(ours) == lines and ours[0] == theirs[0], folder
    assert "| toy | toy CNN |" in (repo / "reports" / "summary.md").read_text()
    assert "| toy CNN | TF-Lite int8 | LiteRT | yes |" in (repo / "reports" / "artifacts.md").read_text()
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_the_demo_and_predict_offer_the_most_accurate_model_first(toy_repo):
    import serve
    from cifar import inference

    repo, _, _ = toy_repo
    index = serve.model_index(repo / "models" / "export", repo / "reports" / "metrics" / "export")
    accuracies = [m["accuracy"] for m in index]
    registered = set(yaml.safe_load((repo / "params.yaml").read_text())["models"])
    assert "toy" in registered and {m["name"] for m in index} == registered
    assert accuracies == sorted(accuracies, reverse=True)
    best, accuracy = inference.most_accurate(repo / "reports" / "metrics" / "evaluate.json")
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert accuracy == max(evaluated[n]["test"]["accuracy"] for n in registered)
    assert evaluated[best]["test"]["accuracy"] == accuracy
