"""Writing a stage's outputs, reading another's, and saying what produced them. DVC removes a
stage's outputs before it runs and caches the last good ones; what stays here is the one-file
atomic write, for scripts that also run on their own (predict, studies)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


class StageError(Exception):
    """An expected failure a stage reports in one line (`stage: error: ...`), not a traceback."""


@contextlib.contextmanager
def atomic_path(final, is_dir=False):
    """A temporary path beside `final` (a folder if `is_dir`) that replaces it when the block ends
    without an error, else is deleted."""
    final = Path(final)
    if final.is_dir() != is_dir and final.exists() and not final.is_symlink():
        have, want = ("folder", "file") if final.is_dir() else ("file", "folder")
        raise StageError(f"{final} is a {have}, but a {want} is to be written there; refusing to replace it "
                         "(give another path)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; a folder output keeps this mode
    target = tmp if is_dir else tmp / final.name
    try:
        yield target
        if is_dir and final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_started = []  # when the running stage began (run_stage), for stage_seconds


def stage_seconds():
    """Seconds since the running stage began (run_stage): each stage's `stage_s` metric."""
    return round(time.monotonic() - _started[-1], 1) if _started else None


def run_stage(name, main, errors=()):
    """Run `main()`; an expected failure becomes `NAME: error: ...` and exit status 1."""
    import sys

    _started.append(time.monotonic())
    try:
        main()
    except (StageError, FileNotFoundError, *errors) as err:
        sys.exit(f"{name}: error: {err}")


def write_json(path, data):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path, stage, needs=()):
    """The JSON object in `path` (written by `stage`) with every dotted key of `needs`; else a
    StageError naming the file, what is wrong and the command that writes it again."""
    path = Path(path)
    rerun = f"it is written by the '{stage}' stage: run `dvc repro {stage}`"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {rerun}")
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise StageError(f"{path} is not readable JSON ({type(err).__name__}: {err}); {rerun}") from None
    if not isinstance(value, dict):
        raise StageError(f"{path} is not a JSON object; {rerun}")
    for dotted in needs:
        node = value
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise StageError(f"{path} lacks '{dotted}' (an older or damaged file); {rerun}")
            node = node[part]
    return value


def read_models(folder, names, stage, needs=()):
    """The per-model `folder`/NAME.json of `names` (stage STAGE@NAME) merged into one object."""
    merged = {}
    for name in names:
        value = read_json(Path(folder) / f"{name}.json", f"{stage}@{name}", needs=[f"{name}.{k}" for k in needs])
        merged.update({key: item for key, item in value.items() if key == name or key not in merged})
    return merged


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cpu_name(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's model name, with family and model numbers ("AMD EPYC" is both a Zen 4 and a Zen 5)."""
    try:
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return platform.processor() or platform.machine()
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def hardware():
    """The machine a number was measured on: CPU, cores and the GPUs TensorFlow sees."""
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import tensorflow as tf

        info["gpus"] = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info
