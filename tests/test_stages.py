"""dvc.yaml declares all a stage reads: its script and every scripts/cifar module that script
imports, directly or through another module, so a code change reruns exactly the stages it can
affect."""

import ast
import re

import pytest
import yaml

from conftest import REPO

SCRIPTS = REPO / "scripts"


def cifar_imports(path):
    """Names of the scripts/cifar modules a file imports, at any depth inside the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "cifar":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifar."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cifar.")}
    return found


def closure(script):
    """The script and every cifar module it reaches, as repository-relative paths."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        rel = path.relative_to(REPO).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        todo += [SCRIPTS / "cifar" / f"{name}.py" for name in cifar_imports(path)]
    return seen


def stages():
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        yield name, stage.get("do", stage)


@pytest.mark.parametrize("name,stage", list(stages()), ids=[name for name, _ in stages()])
def test_every_stage_declares_the_code_it_runs(name, stage):
    deps = set(stage["deps"])
    for script in re.findall(r"scripts/[\w/]+\.(?:py|mjs)", stage["cmd"]):
        missing = closure(REPO / script) - deps
        assert not missing, f"stage {name} runs {script} but does not declare {sorted(missing)}"
    if name == "parity":  # it runs TF.js in Node.js through this script and the npm packages
        assert {"scripts/cifar/tfjs_predict.mjs", "package-lock.json"} <= deps


def test_the_import_scan_finds_nested_and_module_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from cifar import data\n\ndef f():\n    from cifar.outputs import atomic_path\n"
                     "    import cifar.params\n")
    assert cifar_imports(probe) == {"data", "outputs", "params"}


def test_the_resume_identity_hashes_exactly_the_code_the_stage_declares(tmp_path):
    """An edit to a file the stage declares (the model's module) changes the identity; an edit to
    one it does not declare (another model's module) does not."""
    import shutil

    from cifar import stage

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(SCRIPTS, tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    declared = set(stage.declared_code("train_fast", tmp_path))
    assert declared == {d for d in dict(stages())["train_fast"]["deps"] if d.startswith("scripts/")}
    assert "scripts/cifar/fast.py" in declared and "scripts/cifar/mobilenet.py" not in declared
    before = stage.code_digest("train_fast", tmp_path)
    (tmp_path / "scripts" / "cifar" / "mobilenet.py").write_text("# another model's code\n")
    assert stage.code_digest("train_fast", tmp_path) == before
    with open(tmp_path / "scripts" / "cifar" / "fast.py", "a") as f:
        f.write("\n# an edit\n")
    assert stage.code_digest("train_fast", tmp_path) != before
    with pytest.raises(stage.outputs.StageError, match="has no stage 'train_nothing'"):
        stage.code_digest("train_nothing", tmp_path)
