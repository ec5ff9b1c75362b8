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


class StageError(Exception):
    """An expected failure a stage reports in one line (`stage: error: ...`), not a traceback."""


class OutputError(StageError, ValueError):
    """An output path that cannot be written as asked (a folder where a file should go, say)."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(final):
    """Remove temporaries of `final` left by a process that was killed (its pid is gone)."""
    for leftover in final.parent.glob(f".{final.name}.*.tmp*"):
        pid = leftover.name[len(final.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(final, is_dir=False):
    """Raise OutputError if `final` cannot take the output: a folder where a file is to be
    written, or the reverse. Stages call it at start, before hours of work."""
    final = Path(final)
    if final.is_dir() and not final.is_symlink() and not is_dir:
        raise OutputError(f"{final} is a folder, but a file is to be written there; "
                          "refusing to replace a folder with a file (give the path of a file)")
    if final.is_file() and not final.is_symlink() and is_dir:
        raise OutputError(f"{final} is a file, but a folder is to be written there; "
                          "move the file away or give another path")


@contextlib.contextmanager
def atomic_path(final, is_dir=False):
    """Yield a temporary path beside `final`; on success swap it in for `final`, else delete it.

    A file replaces the old one in one atomic rename. A folder cannot: the old one is renamed
    aside first, the new one renamed in, and only then is the old one deleted, so `final` is
    never missing while the stage is alive. Temporaries are named `.NAME.PID.*.tmp`; those of a
    killed process are removed by the next write of the same output. A file output whose path
    is an existing folder (or the reverse) is refused: that is a wrong path, not stale output.
    """
    final = Path(final)
    check_output(final, is_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder output keeps this mode
    target = tmp if is_dir else tmp / final.name
    aside = tmp.with_name(tmp.name + ".old")
    try:
        yield target
        if not is_dir:
            os.replace(target, final)
        elif not (final.exists() or final.is_symlink()):
            os.replace(target, final)
        else:
            os.replace(final, aside)
            try:
                os.replace(target, final)
            except OSError:
                os.replace(aside, final)
                raise
    finally:
        for path in (tmp, aside):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_symlink() or path.exists():
                path.unlink(missing_ok=True)


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
