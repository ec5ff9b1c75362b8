"""The model registry is the one list: a toy model added in a copy of the repository through its
module and params alone (the module, its section and its registry entry; no dvc.yaml edit, no
script) is trained, evaluated, exported and parity-checked by `dvc repro`, and nothing that was
already up to date reruns. Editing one model's module reruns that model's stages and the
every-model ones only."""

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
    """The toy CNN from its params section."""
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
    (repo / "scripts" / "cifar" / "models" / "toy.py").write_text(TOY_BUILDER)
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["models"]["toy"] = {"module": "toy", "recipe": "shared", "label": "toy CNN", "tta": 1}
    values["toy"] = {"filters": 4}
    (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return repo, env, run(["dvc", "repro"], cwd=repo, **env).stdout


def test_a_registered_model_goes_through_every_later_stage(toy_repo):
    repo, env, output = toy_repo
    # fetch_weights reruns for the new registry entry (its folder: no pretrained weights) and
    # writes the other models' folders as they were, so nothing else retrains.
    assert ran_stages(output) == {"fetch_weights", "train@toy", "robustness", "evaluate", "export@toy", "parity@toy",
                                  "demo@toy", "artifacts_table"}
    evaluated = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert set(evaluated) >= {"cnn", "mobilenet", "toy"} and "accuracy" in evaluated["toy"]["test"]
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


def test_editing_one_models_module_reruns_only_that_models_stages(toy_repo, tmp_path):
    """dvc status after an edit: the toy's module reruns the toy's stages (and robustness and
    evaluate, which run every model); fast.py reruns the models it builds, never the toy's
    or the seed CNN's."""
    source, env, _ = toy_repo
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    every_model = {"robustness", "evaluate"}

    def changed():
        return set(json.loads(run(["dvc", "status", "--json"], cwd=repo, **env).stdout))

    with open(repo / "scripts" / "cifar" / "models" / "toy.py", "a") as f:
        f.write("\n# an edit\n")
    assert changed() == {"train@toy", "export@toy", "parity@toy", *every_model}
    with open(repo / "scripts" / "cifar" / "models" / "fast.py", "a") as f:
        f.write("\n# an edit\n")
    values = yaml.safe_load((repo / "params.yaml").read_text())
    # Every model built by fast.py: the fast model and its robust variant.
    fast = [name for name, entry in values["models"].items() if entry["module"] == "fast"]
    assert "fast" in fast and "cnn" not in fast
    edited = {"train@toy", "export@toy", "parity@toy",
              *(f"{stage}@{name}" for name in fast for stage in ("train", "export", "parity"))}
    assert changed() == {*edited, *every_model}
    # Test-time augmentation is an inference choice: changing it retrains nothing.
    values["models"]["cnn"]["tta"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    # (fetch_weights reads the registry too: it reruns, a second's copy, and its outputs are as before.)
    assert changed() - edited == {"fetch_weights", "export@cnn", "parity@cnn", "artifacts_table", *every_model}
