import copy
import importlib
import re
import shutil

import pytest
import yaml

from cifar import models, params
from conftest import REPO, run, script


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def edit(path, change):
    values = yaml.safe_load(path.read_text())
    change(values)
    path.write_text(yaml.safe_dump(values))


# fetch_weights' section maps model names to weights: checked against the registry by the stage.
STAGE_SCHEMAS = {name: getattr(importlib.import_module(name), "SCHEMA", None) for name in params.STAGE_SECTIONS}


def test_repository_params_are_valid():
    loaded = params.load([*params.SCHEMA, *params.STAGE_SECTIONS], REPO / "params.yaml", schemas=STAGE_SCHEMAS)
    assert loaded["robustness"]["corruptions"][0] == "gaussian_noise"
    assert loaded["prepare"]["val_fraction"] == 0.2
    assert loaded["shared"]["seed"] == 42
    assert loaded["shared"]["train"]["epochs"] == 25


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("prepare", "val_fraction", 1.5, "prepare.val_fraction = 1.5 is not allowed; expected a number in (0, 1)"),
        ("prepare", "val_fraction", "0.2", "prepare.val_fraction = '0.2' is not allowed"),
        ("shared.train", "epochs", -3, "shared.train.epochs = -3 is not allowed; expected an integer in [1,"),
        ("shared.train", "epochs", 2.5, "shared.train.epochs = 2.5 is not allowed; expected an integer"),
        ("shared.augment", "horizontal_flip", "yes", "shared.augment.horizontal_flip = 'yes' is not allowed; expected true or false"),
        ("shared.augment", "resolution_scale", [1.2, 0.8], "shared.augment.resolution_scale = [1.2, 0.8] is not allowed"),
        # A factor near 0 would resize to 0 px and crash cv2.resize mid-training.
        ("shared.augment", "resolution_scale", [0.01, 1.2],
         "shared.augment.resolution_scale = [0.01, 1.2] is not allowed; expected a list [low, high] with 0.25 <= low"),
        ("download", "sha256", "abc", "download.sha256 = 'abc' is not allowed; expected a sha256"),
    ],
)
def test_bad_values_name_key_value_and_allowed(params_file, section, key, value, message):
    def change(values):
        node = values
        for part in section.split("."):
            node = node[part]
        node[key] = value

    edit(params_file, change)
    with pytest.raises(params.ParamsError) as err:
        params.load(list(params.SCHEMA), params_file)
    assert message in str(err.value)


def test_unknown_and_missing_keys(params_file):
    original = yaml.safe_load(params_file.read_text())

    edit(params_file, lambda v: v["prepare"].update(val_fracton=0.3))
    with pytest.raises(params.ParamsError, match="unknown key 'prepare.val_fracton'; allowed keys here: "):
        params.load(["prepare"], params_file)

    params_file.write_text(yaml.safe_dump(original))
    edit(params_file, lambda v: v["prepare"].pop("test_limit"))
    with pytest.raises(params.ParamsError, match="missing key 'prepare.test_limit'"):
        params.load(["prepare"], params_file)

    params_file.write_text(yaml.safe_dump(original))
    edit(params_file, lambda v: v.update(extra={"a": 1}))
    with pytest.raises(params.ParamsError, match="unknown section 'extra'"):
        params.load(["prepare"], params_file)


def test_numbers_are_read_as_dvc_reads_them(params_file):
    """`1e-3` is a float to DVC (YAML 1.2) and to `dvc exp run -S`; PyYAML (YAML 1.1) reads it as
    a string. The stages must accept what DVC accepts, and read the same value."""
    text = params_file.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3")
    assert "learning_rate: 1e-3" in text
    params_file.write_text(text)
    assert params.load(["shared"], params_file)["shared"]["train"]["learning_rate"] == 0.001

    from dvc.utils.serialize import load_yaml
    assert load_yaml(str(params_file))["shared"]["train"]["learning_rate"] == 0.001


def test_every_resolution_scale_the_schema_allows_can_be_augmented():
    import numpy as np

    from cifar import augment

    low = 0.25
    assert params.check([low, low], params.scale_range, "shared.augment.resolution_scale") == [low, low]
    config = {"resolution_scale": [low, low], "rotation_degrees": 0, "shift_fraction": 0, "horizontal_flip": False}
    out = augment.augment_batch(np.zeros((2, 32, 32, 3), np.uint8), 0, config)
    assert out.shape == (2, 32, 32, 3)


def test_unparsable_file(params_file):
    params_file.write_text("prepare: [unclosed\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(["prepare"], params_file)


def test_stage_with_bad_params_exits_nonzero_and_writes_nothing(workdir, archive):
    path, sha = archive
    edit(workdir / "params.yaml", lambda v: v["prepare"].update(val_fraction=1.5))
    shutil.copy(path, workdir / path.name)
    proc = run(["python", script("prepare"), "--archive", path.name, "--out", "out/cifar10.npz",
                "--metrics", "metrics/prepare.json"], cwd=workdir, check=False, CIFAR10_SHA256=sha)
    assert proc.returncode != 0
    assert "prepare.val_fraction = 1.5 is not allowed; expected a number in (0, 1)" in proc.stderr
    assert not (workdir / "out").exists() and not (workdir / "metrics").exists()


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(models={}), "'models' must map each model's name to its entry"),
    (lambda v: v["models"].update(CNN2=v["models"]["cnn"]), "models.CNN2 is not a valid model name"),
    (lambda v: v["models"]["cnn"].pop("label"), "missing key 'models.cnn.label'"),
    (lambda v: v["models"]["cnn"].update(stage="train_cnn"), "unknown key 'models.cnn.stage'; allowed keys here: label, module, tta"),
    (lambda v: v["models"]["cnn"].update(module="cifar.models.cnn"), "models.cnn.module = 'cifar.models.cnn' is not allowed; "
     "expected the name of a model module of the project's package, scripts/cifar/models/NAME.py"),
    # Only the project's model modules: params.yaml or a -S must not name any importable code.
    (lambda v: v["models"]["cnn"].update(module="../outputs"), "models.cnn.module = '../outputs' is not allowed"),
    (lambda v: v["models"]["cnn"].update(module="scripts/cifar/models/cnn.py"), "is not allowed"),
    (lambda v: v["models"]["cnn"].update(tta=3), "models.cnn.tta = 3 is not allowed; expected one of 0, 1, 2"),
    (lambda v: v["models"]["fast_robust"].update(module="nowhere"),
     "models.fast_robust needs the section 'nowhere' (its module's settings), which is missing"),
    (lambda v: v.pop("fast_robust"), "models.fast_robust needs the section 'fast_robust' (its overrides"),
])
def test_the_model_registry_is_checked(params_file, change, message):
    edit(params_file, change)
    with pytest.raises(params.ParamsError, match=re.escape(message)):
        params.load(["shared"], params_file)


def test_a_registered_models_own_section_is_accepted_and_others_are_not(params_file):
    def add_toy(values):
        values["models"]["toy"] = {"module": "cnn", "label": "toy", "tta": 0}
        values["toy"] = {"dense_units": 64}  # the seed CNN's settings, but for this key

    edit(params_file, add_toy)
    entry, section = models.entry("toy", params_file)
    assert models.train_stage("toy") == "train@toy" and section["filters"] == [64, 128, 256]
    assert section["dense_units"] == 64 and models.entry("cnn", params_file)[1]["dense_units"] == 512
    # The merged settings are checked by its model module's rules (cifar.models.cnn.SCHEMA),
    # under the name of the section a value came from.
    edit(params_file, lambda v: v["toy"].update(filters=[0, 1, 2]))
    with pytest.raises(params.ParamsError, match=r"toy \(over cnn\).filters = \[0, 1, 2\] is not allowed; expected a list of 3"):
        models.entry("toy", params_file)
    edit(params_file, lambda v: v["toy"].update(filters=[64, 128, 256], widths=[1, 2, 3]))
    with pytest.raises(params.ParamsError, match=r"unknown key 'toy \(over cnn\).widths'"):
        models.entry("toy", params_file)
    with pytest.raises(params.ParamsError, match="no model 'nope' in the models registry; registered: .*toy"):
        models.entry("nope", params_file)
    edit(params_file, lambda v: v.update(stray={"a": 1}))
    with pytest.raises(params.ParamsError, match="unknown section 'stray'"):
        params.load(["shared"], params_file)


def test_every_model_lays_its_train_and_augment_over_shareds(params_file):
    """One shape: shared's train: and augment:, the module's section, the model's own, in order."""
    edit(params_file, lambda v: (v["shared"]["train"].update(epochs=7, class_weight="balanced"),
                                 v["cnn"]["train"].update(epochs=3)))
    cnn, fast, robust = (models.entry(name, params_file)[1] for name in ("cnn", "fast", "fast_robust"))
    assert cnn["train"]["epochs"] == 3 and cnn["train"]["lr_decay"] == 0.95 and cnn["augment"]["policy"] == "seed"
    assert fast["train"]["epochs"] == 15 and fast["train"]["class_weight"] == "balanced"  # shared's, under its own
    assert robust["train"]["epochs"] == 20 and robust["augment"]["translate_px"] == 2  # fast's, under its own
    for change, message in [
        (lambda v: v["fast"]["train"].update(lr_decay=0.9),
         "fast.train.lr_decay = 0.9 is not allowed; expected null (the seed's schedule"),
        (lambda v: v["cnn"]["augment"].update(policy="flip_translate"),
         "cnn.augment.translate_px is null, but policy 'flip_translate' reads it"),
        (lambda v: v["cnn"].pop("train"), "section 'cnn' lacks 'train': every model module's section has train:"),
    ]:
        edit(params_file, change)
        with pytest.raises(params.ParamsError, match=re.escape(message)):
            models.entry("fast" if "fast" in message else "cnn", params_file)


@pytest.mark.parametrize("section, key, value, message", [
    ("augment_preview", "images", 0, "augment_preview.images = 0 is not allowed"),
    ("robustness", "corruptions", ["spatter"], "robustness.corruptions = ['spatter'] is not allowed; expected a non-empty list"),
    ("robustness", "corruptions", [], "robustness.corruptions = [] is not allowed"),
    ("export", "tfjs_quantization", "int4", "export.tfjs_quantization = 'int4' is not allowed"),
    ("parity", "latency_runs", -1, "parity.latency_runs = -1 is not allowed"),
])
def test_a_stage_checks_its_own_section(params_file, section, key, value, message):
    """Sections downstream of training keep their schema with their stage (so editing one does
    not touch params.py, on which every training stage depends)."""
    edit(params_file, lambda values: values[section].__setitem__(key, value))
    with pytest.raises(params.ParamsError) as err:
        params.load([section], params_file, schemas=STAGE_SCHEMAS)
    assert message in str(err.value)


def test_every_stage_section_is_named_and_a_misspelt_one_fails(params_file):
    assert set(STAGE_SCHEMAS) == {"fetch_weights", "augment_preview", "evaluate", "robustness", "export", "parity"}
    edit(params_file, lambda values: values.__setitem__("robustnes", values.pop("robustness")))
    with pytest.raises(params.ParamsError, match="unknown section 'robustnes'"):
        params.load(["shared"], params_file)


@pytest.mark.parametrize("phases, ok", [
    ([], True),
    ([{"name": "head", "epochs": 1, "learning_rate": 0.001, "trainable_layers": 0},
      {"name": "top", "epochs": 2, "learning_rate": 0.0001, "trainable_layers": 40}], True),
    ([{"name": "head", "epochs": 1, "learning_rate": 0.001, "trainable_layers": 0}] * 2, False),  # names repeat
    ([{"name": "head", "epochs": 0, "learning_rate": 0.001, "trainable_layers": 0}], False),
    ([{"name": "head", "epochs": 1, "learning_rate": 0.001}], False),
    ({"name": "head"}, False),
])
def test_mobilenet_checks_its_own_section_and_its_phases(phases, ok):
    from cifar.models import mobilenet

    section = models.entry("mobilenet", REPO / "params.yaml")[1]  # the repository's: valid
    if ok:
        params.validate({**section, "phases": phases}, mobilenet.SCHEMA, "mobilenet")
    else:
        with pytest.raises(params.ParamsError, match="mobilenet.phases = .* is not allowed; expected"):
            params.validate({**section, "phases": phases}, mobilenet.SCHEMA, "mobilenet")


def test_a_model_module_outside_the_package_is_refused_before_import():
    from cifar import models

    with pytest.raises(params.ParamsError, match="module = 'os.path' is not allowed"):
        models.module({"module": "os.path"})


def test_a_model_module_without_a_schema_is_refused(params_file, monkeypatch):
    import types

    from cifar import models

    monkeypatch.setattr(models, "module", lambda entry, where="models": types.ModuleType("cifar.models.cnn"))
    with pytest.raises(params.ParamsError, match="cifar.models.cnn has no SCHEMA: a model module declares the keys"):
        models.entry("cnn", params_file)
