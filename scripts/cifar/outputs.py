"""Writing stage outputs safely, and saying what produced them.

A stage writes each output to a temporary path beside it and renames it into place only when
the stage has succeeded, so a failure never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final, is_dir=False):
    """Yield a temporary path beside `final`; on success move it to `final`, else delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp if is_dir else tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path, data):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware():
    """The machine a number was measured on: CPU model, core count and any GPUs TF sees."""
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import tensorflow as tf

        info["gpus"] = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info
