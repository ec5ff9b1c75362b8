import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import synthetic

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MIRROR = SHARED / "data" / "cifar-10-python.tar.gz"
STAND_IN_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_no_top.weights.h5"
# Tools (python, dvc) come from the interpreter running the tests, so stage commands in
# dvc.yaml that say `python` run in the same environment.
BIN = str(Path(sys.executable).parent)
# On a GPU host, the tests that compare two runs to 1e-4 need cuDNN's deterministic kernels: set
# before TensorFlow is imported, here and in every command the tests run (they inherit it).
if Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"):
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # this process's own fits (cifar.training does it for stages)


def registry_names():
    """The registry's model names, in order (params.yaml `models`)."""
    return list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])


MODEL_NAMES = registry_names()


def run_env(**extra):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    # The stages' own defaults apply: no inherited offline inputs or log settings.
    for name in ("CIFAR10_ARCHIVE", "CIFAR10_SHA256", "MOBILENET_WEIGHTS", "MOBILENET_WEIGHTS_SHA256",
                 "TF_CPP_MIN_LOG_LEVEL", "CIFAR10_VERBOSE", "OPENCV_IO_MAX_IMAGE_PIXELS",
                 # Under `make test`, make's own: a `make` a test runs would print as a sub-make.
                 "MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    env.update(extra)
    return env


def run(args, cwd, check=True, **env):
    """Run a command with the test environment; return the CompletedProcess (text)."""
    proc = subprocess.run(args, cwd=cwd, env=run_env(**env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# A missing input or tool fails its tests: a suite that skips what it cannot run reads as green
# while checking less. Opt out on a machine that lacks them on purpose: CIFAR10_ALLOW_SKIP=1.
ALLOW_SKIP = os.environ.get("CIFAR10_ALLOW_SKIP", "0") not in ("", "0")


def missing(message):
    """Fail the test for `message` (what it needs), or skip it where CIFAR10_ALLOW_SKIP=1."""
    if ALLOW_SKIP:
        pytest.skip(message)
    pytest.fail(f"{message} (set CIFAR10_ALLOW_SKIP=1 to skip such tests instead)")


def require_shared(*paths):
    """The offline mirror in ../shared, or the test fails (`missing`)."""
    absent = [str(p) for p in paths if not Path(p).is_file()]
    if absent:
        missing(f"needs the offline inputs in ../shared: {', '.join(absent)}")


def script(name):
    """The path of a stage script (scripts/NAME.py), a user's tool (scripts/tools/NAME.py), a
    maintainer's (tools/NAME.py) or a study (studies/STUDY/NAME.py)."""
    found = [REPO / "scripts" / f"{name}.py", REPO / "scripts" / "tools" / f"{name}.py", REPO / "tools" / f"{name}.py",
             *sorted((REPO / "studies").glob(f"*/{name}.py"))]
    return str(next(p for p in found if p.is_file()))


@pytest.fixture
def archive(tmp_path):
    """A valid tiny archive (40 images per batch) and its sha256."""
    (tmp_path / "src").mkdir()
    path = synthetic.write_archive(tmp_path / "src" / "cifar-10-python.tar.gz")
    return path, synthetic.sha256(path)


@pytest.fixture
def workdir(tmp_path):
    """An empty directory holding the repository's params.yaml, for running one script."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    return work


def copy_repo(dest):
    """Copy the repository's files (tracked and untracked, not ignored) to `dest` as a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # Start from no results: the reference dvc.lock and metrics belong to the full run.
    for stale in ["dvc.lock", *[p.relative_to(dest) for p in (dest / "reports" / "metrics").rglob("*.json")]]:
        (dest / stale).unlink(missing_ok=True)
    # The npm packages (`make setup`): the parity stage runs TF.js in Node.js from them.
    # And MediaPipe's environment: the export writes the TF-Lite metadata in it, parity checks with it.
    for made in ("node_modules", ".venv-mediapipe"):
        if (REPO / made).is_dir():
            (dest / made).symlink_to(REPO / made, target_is_directory=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def set_param(repo, dotted, value):
    """Set `dotted` (e.g. shared.train.epochs) in the repository's params.yaml."""
    path = repo / "params.yaml"
    values = yaml.safe_load(path.read_text())
    *parents, key = dotted.split(".")
    node = values
    for part in parents:
        node = node[part]
    node[key] = value
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def history(repo, name):
    """The model `name`'s per-epoch history, as evaluate reads it from its DVCLive log."""
    from evaluate import read_history

    return read_history(repo / "reports" / "live" / name, f"train@{name}")


def shared_section():
    """params.yaml's `shared` (the seed's train: and augment:, every model's base)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())["shared"]


def seed_train(**changes):
    """The seed's training settings (shared.train) in float32, with `changes`."""
    return {**shared_section()["train"], "precision": "float32", **changes}


def cnn_section(**changes):
    """The seed CNN's params section (the repository's), with `changes`: what tests build their
    small CNNs from (cifar.models.cnn.build takes a whole section, as the pipeline gives it)."""
    return {**yaml.safe_load((REPO / "params.yaml").read_text())["cnn"], "augment": shared_section()["augment"],
            "train": seed_train(), **changes}


def mobilenet_weights(folder):
    """A MobileNetV2 backbone weights file the test writes (ImageNet's cannot be downloaded here)."""
    import keras

    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = folder / "mobilenet_v2_test.weights.h5"
    base.save_weights(path)
    return path


def default_phases(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())["mobilenet"]["phases"]


def tiny_repo(root, epochs):
    """A repository copy in `root` with the tiny pipeline's settings, a synthetic archive and a
    test-written weights file, before any `dvc repro`. Returns (repo, env for the offline inputs)."""
    archive = synthetic.write_archive(root / "cifar-10-python.tar.gz")
    env = {"CIFAR10_ARCHIVE": str(archive), "CIFAR10_SHA256": synthetic.sha256(archive)}
    repo = copy_repo(root / "repo")
    set_param(repo, "shared.train.epochs", epochs)
    set_param(repo, "fast.train.epochs", epochs)
    set_param(repo, "fast_robust.train.epochs", epochs)
    set_param(repo, "fast.float32", None)  # one recipe on any host: a CPU without bfloat16 would lay its own over
    # Every model's inference without test-time augmentation: less work in every later stage
    # (test_fast and test_registry export a model with it).
    for name in yaml.safe_load((repo / "params.yaml").read_text())["models"]:
        set_param(repo, f"models.{name}.tta", 0)
    set_param(repo, "fetch_weights.mobilenet", str(mobilenet_weights(root)))
    # MobileNetV2's recipe in phases as the default has it, at 32 px and one epoch a phase: the
    # default's 128 px costs 16x the work in every stage that runs the model.
    set_param(repo, "mobilenet.input_size", 32)
    set_param(repo, "mobilenet.phases", [{**phase, "epochs": 1} for phase in default_phases(repo)])
    set_param(repo, "export.int8_calibration_images", 32)
    set_param(repo, "parity.latency_runs", 3)
    return repo, env


def tiny_pipeline(root, epochs):
    """tiny_repo after `dvc repro`: (repo, env for the offline inputs, output of dvc repro)."""
    repo, env = tiny_repo(root, epochs)
    return repo, env, run(["dvc", "repro"], cwd=repo, **env).stdout


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items):
    """The suite runs on two processes (pytest.ini, pytest-xdist's loadgroup): the tests on the
    shared tiny pipeline run in one of them, so it is built once."""
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("pipeline"))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """One repository copy after a first `dvc repro` on a synthetic archive, shared by the
    end-to-end modules (pipeline, export, web); tests that change params rerun `dvc repro`."""
    return tiny_pipeline(tmp_path_factory.mktemp("pipeline"), epochs=2)


@pytest.fixture
def pipeline_copy(pipeline, tmp_path):
    """A copy of the shared tiny pipeline (outputs and DVC cache included) for a test that changes
    params or outputs: the shared one stays as the first `dvc repro` left it, whatever the order."""
    source, env, first = pipeline
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    return repo, env, first
