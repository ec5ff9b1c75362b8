"""The code each dvc.yaml stage runs, from the real import closure of its scripts: `make deps`
writes it into dvc.yaml, tests/test_stages.py fails when dvc.yaml differs from it.

Usage: python tools/code_deps.py [--write] [--dvc-yaml dvc.yaml]

A stage's code is every file under scripts/ that its command's scripts reach: each `cifar`
module they import (at any depth in a file, a package's __init__ included), and each program a
module runs by file name (page.py's serve.py, inference.py's tfjs_predict.mjs). A stage of the
model registry (`foreach: ${models}`) that loads a model module (it reaches cifar/models) also
declares `scripts/cifar/models/${item.module}.py`, and the closure of every registered module
but the module itself: an edit to one model's module reruns that model's stages only, and an edit
to what a module imports (cifar/training/airbench.py for the fast model) reruns every stage that
can load it. Deps outside scripts/ (data, models, web/, package-lock.json) are the stage's own
and stay as written.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DEP = "scripts/cifar/models/${item.module}.py"
PROGRAM = re.compile(r"[\w-]+\.(?:py|mjs)")


def module_files(dotted, scripts):
    """The files importing `dotted` (cifar.X.Y) runs: each package __init__ on the way, the module."""
    parts, files = dotted.split("."), []
    for depth in range(1, len(parts) + 1):
        base = scripts.joinpath(*parts[:depth])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
    return files


def reached(path, scripts):
    """The files `path` imports from the cifar package, and the programs it runs by name."""
    if path.suffix != ".py":
        return []
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cifar":
            for alias in node.names:  # `from cifar.X import Y`: Y may be a module of package X
                found += module_files(f"{node.module}.{alias.name}", scripts) or module_files(node.module, scripts)
        elif isinstance(node, ast.Import):
            found += [f for a in node.names if a.name.split(".")[0] == "cifar" for f in module_files(a.name, scripts)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and PROGRAM.fullmatch(node.value):
            found += [p for p in scripts.rglob(node.value) if "__pycache__" not in p.parts]
    return found


def closure(paths, root=REPO):
    """Every file under scripts/ that `paths` (repository-relative) reach, themselves included."""
    scripts = root / "scripts"
    seen, todo = set(), [root / p for p in paths]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += reached(path, scripts)
    return {p.relative_to(root).as_posix() for p in seen}


def registered_modules(root=REPO):
    import yaml

    registry = yaml.safe_load((root / "params.yaml").read_text())["models"]
    return sorted({f"scripts/cifar/models/{entry['module']}.py" for entry in registry.values()})


def stage_code(stage, root=REPO):
    """The sorted scripts/ deps the dvc.yaml `stage` (its `do` for a foreach) should declare."""
    scripts = re.findall(r"scripts/[\w/]+\.py", stage["cmd"])
    code = closure(scripts, root)
    if "${item.module}" in str(stage) or "${key}" in stage["cmd"]:
        if "scripts/cifar/models/__init__.py" in code:
            modules = registered_modules(root)
            code |= closure(modules, root) - set(modules)
            code.add(MODULE_DEP)
    return sorted(code)


def expected(root=REPO, dvc_yaml="dvc.yaml"):
    """{stage name: (its dep list as written, the deps it should have)} for every stage."""
    from ruamel.yaml import YAML

    document = YAML().load((root / dvc_yaml).read_text())
    result = {}
    for name, stage in document["stages"].items():
        body = stage.get("do", stage)
        own = [d for d in body.get("deps", []) if not str(d).startswith("scripts/")]
        result[name] = (list(body.get("deps", [])), [*stage_code(body, root), *own])
    return document, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the lists into dvc.yaml")
    parser.add_argument("--dvc-yaml", default="dvc.yaml")
    args = parser.parse_args()
    from ruamel.yaml import YAML

    document, stages = expected(REPO, args.dvc_yaml)
    wrong = {name: (have, want) for name, (have, want) in stages.items() if have != want}
    for name, (have, want) in wrong.items():
        print(f"{name}: + {sorted(set(want) - set(have))}  - {sorted(set(have) - set(want))}"
              if set(have) != set(want) else f"{name}: the order differs")
    if not args.write:
        sys.exit(1 if wrong else 0)
    for name, (_, want) in wrong.items():
        body = document["stages"][name].get("do", document["stages"][name])
        body["deps"] = want
    yaml = YAML()
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    with open(REPO / args.dvc_yaml, "w") as f:
        yaml.dump(document, f)
    print(f"{args.dvc_yaml}: {len(wrong)} stage(s) written")


if __name__ == "__main__":
    main()
