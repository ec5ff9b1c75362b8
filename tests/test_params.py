import copy
import shutil

import pytest
import yaml

from cifar import params
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


def test_repository_params_are_valid():
    loaded = params.load(list(params.SCHEMA), REPO / "params.yaml")
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
        ("download", "sha256", "abc", "download.sha256 = 'abc' is not allowed; expected a sha256"),
        ("augment_preview", "images", 0, "augment_preview.images = 0 is not allowed"),
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


def test_unparsable_file(params_file):
    params_file.write_text("prepare: [unclosed\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(["prepare"], params_file)


def test_stage_with_bad_params_exits_nonzero_and_writes_nothing(workdir, archive):
    path, sha = archive
    edit(workdir / "params.yaml", lambda v: v["prepare"].update(val_fraction=1.5))
    shutil.copy(path, workdir / path.name)
    (workdir / f"{path.name}.sha256").write_text(f"{sha}  {path.name}\n")
    proc = run(["python", script("prepare"), "--archive", path.name, "--out", "out/cifar10.npz",
                "--metrics", "metrics/prepare.json"], cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "prepare.val_fraction = 1.5 is not allowed; expected a number in (0, 1)" in proc.stderr
    assert not (workdir / "out").exists() and not (workdir / "metrics").exists()
