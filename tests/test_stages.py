"""dvc.yaml declares all a stage reads: its script and every scripts/cifar module that script
imports, directly or through another module, so a code change reruns exactly the stages it can
affect."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SCRIPTS = REPO / "scripts"


def cifar_imports(path):
    """Dotted names of the cifar modules a file imports, at any depth inside the file (for
    `from cifar.X import Y`, both cifar.X and cifar.X.Y: Y may be a module of package X)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cifar":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cifar.")}
    return found


def module_files(dotted):
    """The files importing `dotted` runs: the module, and each package __init__ on its way."""
    parts = dotted.split(".")[1:]
    files = []
    for depth in range(1, len(parts) + 1):
        base = SCRIPTS.joinpath("cifar", *parts[:depth])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
    return files


def closure(script):
    """The script and every cifar module it reaches, as repository-relative paths."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if rel in seen:
            continue
        seen.add(rel)
        todo += [f for name in cifar_imports(path) for f in module_files(name)]
    return seen


def stages():
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        yield name, stage.get("do", stage)


def covered(path, deps):
    """Whether `path` is a declared dep, or inside a declared folder."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name,stage", list(stages()), ids=[name for name, _ in stages()])
def test_every_stage_declares_the_code_it_runs(name, stage):
    deps = set(stage["deps"])
    for script in re.findall(r"scripts/[\w/]+\.(?:py|mjs)", stage["cmd"]):
        missing = sorted(p for p in closure(REPO / script) if not covered(p, deps))
        assert not missing, f"stage {name} runs {script} but does not declare {missing}"
    if name == "parity":  # it runs TF.js in Node.js through this script and the npm packages
        assert {"scripts/cifar/tfjs_predict.mjs", "package-lock.json"} <= deps
    if name in ("train", "export", "parity"):  # the model's own module: its builder, the Keras objects it loads
        assert "scripts/cifar/models/${item.module}.py" in deps


def test_scripts_holds_one_script_per_stage_named_as_the_stage():
    """scripts/*.py are the stage scripts, one per dvc.yaml stage (a foreach family, export@NAME,
    has one); tools are in scripts/tools/."""
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
    probe = tmp_path / "probe.py"
    probe.write_text("from cifar import data\n\ndef f():\n    from cifar.outputs import atomic_path\n"
                     "    import cifar.params\n")
    assert cifar_imports(probe) == {"cifar", "cifar.data", "cifar.outputs", "cifar.outputs.atomic_path", "cifar.params"}
    assert closure(probe) >= {"scripts/cifar/data.py", "scripts/cifar/outputs.py", "scripts/cifar/params.py"}


def test_the_resume_identity_hashes_exactly_the_code_the_stage_declares(tmp_path):
    """An edit to a file the stage declares (the model's module) changes the identity; an edit to
    one it does not declare (another model's module) does not."""
    import shutil

    from cifar import stage

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(SCRIPTS, tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    declared = set(stage.declared_code("train@fast", tmp_path))
    assert {d for d in declared if not d.startswith("scripts/cifar/training/")} == {
        d.replace("${item.module}", "fast") for d in dict(stages())["train"]["deps"]
        if d.startswith("scripts/") and d != "scripts/cifar/training"}
    assert "scripts/cifar/training/fit.py" in declared  # a folder counts with every file in it
    assert "scripts/cifar/models/fast.py" in declared and "scripts/cifar/models/mobilenet.py" not in declared
    before = stage.code_digest("train@fast", tmp_path)
    assert stage.code_digest("train@fast_robust", tmp_path) == before  # the same module, the same code
    (tmp_path / "scripts" / "cifar" / "models" / "mobilenet.py").write_text("# another model's code\n")
    assert stage.code_digest("train@fast", tmp_path) == before
    with open(tmp_path / "scripts" / "cifar" / "models" / "fast.py", "a") as f:
        f.write("\n# an edit\n")
    assert stage.code_digest("train@fast", tmp_path) != before
    with pytest.raises(stage.outputs.StageError, match="has no stage 'train_nothing'"):
        stage.code_digest("train_nothing@cnn", tmp_path)
