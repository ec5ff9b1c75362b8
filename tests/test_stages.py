"""dvc.yaml declares all a stage reads: its script and every scripts/ file that script reaches,
directly or through another module (a model module included), so a code change reruns exactly
the stages it can affect. The lists are generated (tools/code_deps.py, `make deps`)."""

from pathlib import Path

import pytest
import yaml

import code_deps
from conftest import REPO

SCRIPTS = REPO / "scripts"


def stages():
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        yield name, stage.get("do", stage)


def test_every_stage_declares_exactly_the_code_it_runs():
    _, found = code_deps.expected()
    wrong = {name: (sorted(set(want) - set(have)), sorted(set(have) - set(want)))
             for name, (have, want) in found.items() if have != want}
    assert not wrong, f"dvc.yaml's code deps differ from the import closure (+missing, -extra); run `make deps`: {wrong}"


def test_a_model_stage_declares_its_module_and_what_the_modules_import():
    deps = dict(stages())
    for name in ("train", "robustness", "evaluate", "export", "parity"):
        assert "scripts/cifar/models/${item.module}.py" in deps[name]["deps"], name
        # the fast model's module imports its optimizer from the training package
        assert "scripts/cifar/training/airbench.py" in deps[name]["deps"], name
        assert not {f"scripts/cifar/models/{m}.py" for m in ("cnn", "fast", "mobilenet")} & set(deps[name]["deps"])
    assert "scripts/cifar/tfjs_predict.mjs" in deps["parity"]["deps"]  # a program a module runs by name
    assert "scripts/tools/serve.py" in deps["demo"]["deps"]
    assert not any(d.startswith("scripts/cifar/models/") for d in deps["compare"]["deps"])


def test_scripts_holds_one_script_per_stage_named_as_the_stage():
    """scripts/*.py are the stage scripts, one per dvc.yaml stage (a foreach family, export@NAME,
    has one); tools are in scripts/tools/ (a user's) and tools/ (a maintainer's), studies in studies/."""
    import json
    import subprocess
    import sys

    listed = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    assert {name.split("@")[0] for name in listed} == {p.stem for p in SCRIPTS.glob("*.py")}
    for name, stage in stages():  # and each stage runs its own
        assert stage["cmd"].startswith(f"python scripts/{name}.py "), (name, stage["cmd"])
    assert json.dumps(sorted(p.name for p in SCRIPTS.iterdir() if p.is_file())) == json.dumps(
        sorted(f"{p.stem}.py" for p in SCRIPTS.glob("*.py")))  # nothing else sits beside them


def test_the_import_scan_finds_nested_and_module_imports(tmp_path):
    (tmp_path / "scripts" / "cifar" / "sub").mkdir(parents=True)
    for rel in ("cifar/__init__.py", "cifar/data.py", "cifar/outputs.py", "cifar/sub/__init__.py", "cifar/sub/deep.py"):
        (tmp_path / "scripts" / rel).write_text("")
    (tmp_path / "scripts" / "cifar" / "data.py").write_text("from cifar.sub import deep\n")
    (tmp_path / "scripts" / "run.mjs").write_text("")
    (tmp_path / "scripts" / "probe.py").write_text(
        "from cifar import data\n\ndef f():\n    from cifar.outputs import atomic_path\n    NODE = 'run.mjs'\n")
    assert code_deps.closure(["scripts/probe.py"], tmp_path) == {
        "scripts/probe.py", "scripts/cifar/__init__.py", "scripts/cifar/data.py", "scripts/cifar/outputs.py",
        "scripts/cifar/sub/__init__.py", "scripts/cifar/sub/deep.py", "scripts/run.mjs"}


def test_the_resume_identity_hashes_exactly_the_code_the_stage_declares(tmp_path):
    """An edit to a file the stage declares (the model's module) changes the identity; an edit to
    one it does not declare (another model's module) does not."""
    import shutil

    from cifar import stage

    import subprocess
    import sys

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shutil.copytree(SCRIPTS, tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    declared = stage.declared_code("train@fast", tmp_path)
    assert declared == sorted(d.replace("${item.module}", "fast") for d in dict(stages())["train"]["deps"]
                              if d.startswith("scripts/"))
    assert "scripts/cifar/models/fast.py" in declared and "scripts/cifar/models/mobilenet.py" not in declared
    before = stage.code_digest("train@fast", tmp_path)
    assert stage.code_digest("train@fast_robust", tmp_path) == before  # the same module, the same code
    (tmp_path / "scripts" / "cifar" / "models" / "mobilenet.py").write_text("# another model's code\n")
    assert stage.code_digest("train@fast", tmp_path) == before
    with open(tmp_path / "scripts" / "cifar" / "models" / "fast.py", "a") as f:
        f.write("\n# an edit\n")
    assert stage.code_digest("train@fast", tmp_path) != before
    with pytest.raises(stage.outputs.StageError, match="has no stage 'train_nothing@cnn'"):
        stage.code_digest("train_nothing@cnn", tmp_path)
