"""The model registry is the one list: a toy model added in a copy of the repository through its
module and params alone (the module, its section and its registry entry; no dvc.yaml edit, no
script) is trained, evaluated, exported and parity-checked by `dvc repro`, and nothing that was
already up to date reruns. Editing one model's module reruns that model's stages only."""

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

from cifar import params
from cifar.data import IMAGE_SHAPE, NUM_CLASSES


class SCHEMA(params.Section):
    filters: params.number(int, 1, 64)
    augment: params.Augment
    train: params.Train


def build(section):
    """The toy CNN from its params section."""
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE, name="image"),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(section["filters"], 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
    ], name="toy")
'''


MODEL_STAGES = ("fetch_weights", "train", "robustness", "evaluate", "export", "parity")  # those that load its module


def ran_stages(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def toy_repo(pipeline, tmp_path_factory):
    """A copy of the shared tiny pipeline (outputs and DVC cache included) with a toy model added."""
    source, env, _ = pipeline
    repo = tmp_path_factory.mktemp("registry") / "repo"
    shutil.copytree(source, repo, symlinks=True)
    (repo / "scripts" / "cifar" / "models" / "toy.py").write_text(TOY_BUILDER)
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["models"]["toy"] = {"module": "toy", "label": "toy CNN", "tta": 1}
    values["toy"] = {"filters": 4, "train": {}, "augment": {}}  # shared's, the seed's
    (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return repo, env, run(["dvc", "repro"], cwd=repo, **env).stdout


def test_a_registered_model_goes_through_every_later_stage(toy_repo):
    repo, env, output = toy_repo
    # The toy's own stages, and those that compare every model: nothing else reruns.
    assert ran_stages(output) == {*(f"{stage}@toy" for stage in MODEL_STAGES), "demo@toy", "compare", "artifacts_table"}
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate" / "toy.json").read_text())
    assert "accuracy" in evaluated["toy"]["test"]
    parity = json.loads((repo / "reports" / "metrics" / "export" / "toy.json").read_text())
    assert parity["model"] == "toy" and set(parity["artifacts"]) >= {"keras", "saved_model", "tflite_int8", "tfjs"}
    meta = json.loads((repo / "models" / "export" / "toy" / "metadata.json").read_text())
    assert meta["label"] == "toy CNN"
    assert meta["artifacts"]["tfjs"]["file"]  # its test-time augmentation (tta: 1) is inside every artifact
    # Its plot data as for the other models: two epochs of DVCLive curves, 40 test predictions, 10 classes.
    for folder, lines in (("live/toy/plots/metrics/eval/accuracy.tsv", 3), ("live/toy/plots/metrics/train/loss.tsv", 3),
                          ("eval/confusion/toy.csv", 41), ("eval/per_class/toy.csv", 11)):
        ours = (repo / "reports" / folder).read_text().splitlines()
        theirs = (repo / "reports" / folder.replace("toy", "cnn")).read_text().splitlines()
        assert len(ours) == lines and ours[0] == theirs[0], folder
    assert "| toy | toy CNN |" in (repo / "reports" / "summary.md").read_text()
    assert re.search(r"\| toy CNN \| TF-Lite int8 \((integer only\) \| LiteRT \| yes|float worst3\) \| LiteRT \| no) \|",
                     (repo / "reports" / "artifacts.md").read_text())
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout) == {}


def test_the_demo_and_predict_offer_the_most_accurate_model_first(toy_repo):
    import predict
    import serve

    repo, _, _ = toy_repo
    index = serve.model_index(repo / "models" / "export", repo / "reports" / "metrics" / "export")
    accuracies = [m["accuracy"] for m in index]
    registered = set(yaml.safe_load((repo / "params.yaml").read_text())["models"])
    assert "toy" in registered and {m["name"] for m in index} == registered
    assert accuracies == sorted(accuracies, reverse=True)
    best, accuracy = predict.most_accurate(repo / "reports" / "metrics" / "evaluate")
    evaluated = {n: json.loads((repo / "reports" / "metrics" / "evaluate" / f"{n}.json").read_text())[n]
                 for n in registered}
    assert accuracy == max(evaluated[n]["test"]["accuracy"] for n in registered)
    assert evaluated[best]["test"]["accuracy"] == accuracy


def test_editing_one_models_module_reruns_only_that_models_stages(toy_repo, tmp_path):
    """dvc status after an edit: the toy's module reruns the toy's stages; fast.py reruns the
    models it builds, never the toy's or the seed CNN's."""
    source, env, _ = toy_repo
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)

    def changed():
        return set(json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout))

    with open(repo / "scripts" / "cifar" / "models" / "toy.py", "a") as f:
        f.write("\n# an edit\n")
    assert changed() == {f"{stage}@toy" for stage in MODEL_STAGES}
    with open(repo / "scripts" / "cifar" / "models" / "fast.py", "a") as f:
        f.write("\n# an edit\n")
    values = yaml.safe_load((repo / "params.yaml").read_text())
    # Every model built by fast.py: the fast model and its robust variant.
    fast = [name for name, entry in values["models"].items() if entry["module"] == "fast"]
    assert "fast" in fast and "cnn" not in fast
    edited = {f"{stage}@{name}" for name in ("toy", *fast) for stage in MODEL_STAGES}
    assert changed() == edited
    # Test-time augmentation is an inference choice: changing it retrains nothing.
    values["models"]["cnn"]["tta"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    assert changed() - edited == {f"{stage}@cnn" for stage in ("robustness", "evaluate", "export", "parity")} | {
        "compare", "artifacts_table"}
