"""Writing stage outputs safely, and saying what produced them.

A stage writes each output to a temporary path beside it, and all of them are renamed into place
together, once the whole stage has succeeded (`run_stage`): a failure at any point leaves every
old output as it was, and never a half-written file or folder.
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


class _Staged:
    """One output being written: its final path, the temporary folder beside it, the path the
    stage writes to (the folder itself for a folder output) and where the old output is kept
    while the new one is swapped in."""

    def __init__(self, final, is_dir):
        check_output(final, is_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(final)
        self.final, self.is_dir = final, is_dir
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder output keeps this mode
        self.target = self.tmp if is_dir else self.tmp / final.name
        self.aside = self.tmp.with_name(self.tmp.name + ".old")
        self.swapped = False

    def swap_in(self):
        """Put the new output in place, keeping the old one at `aside` until `forget`. A file
        replaces the old one in one atomic rename (the old one stays reachable through a hard
        link); a folder cannot: the old one is renamed aside first, then the new one in."""
        exists = self.final.exists() or self.final.is_symlink()
        if not self.is_dir:
            if exists:
                os.link(self.final, self.aside, follow_symlinks=False)
            os.replace(self.target, self.final)
        else:
            if exists:
                os.replace(self.final, self.aside)
            try:
                os.replace(self.target, self.final)
            except OSError:
                if exists:
                    os.replace(self.aside, self.final)
                raise
        self.swapped = True

    def swap_back(self):
        """Undo `swap_in`: the old output back in place (or none, if there was none)."""
        if not self.swapped:
            return
        if self.aside.exists() or self.aside.is_symlink():
            if self.is_dir:
                _remove(self.final)
            os.replace(self.aside, self.final)
        else:
            _remove(self.final)
        self.swapped = False

    def forget(self):
        for path in (self.tmp, self.aside):
            _remove(path)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_symlink() or path.exists():
        path.unlink(missing_ok=True)


class StageOutputs:
    """Every output of one stage, written to temporaries and swapped in together when the stage
    has succeeded (`commit`). A failure before that, at any point, leaves every old output as it
    was. If swapping in one of them fails, those already swapped in are put back. (A kill in the
    middle of the swaps, a few renames long, can still leave some new and some old.)"""

    def __init__(self):
        self.staged = []

    def path(self, final, is_dir=False):
        """The temporary path to write `final` to; swapped in at `commit`."""
        staged = _Staged(Path(final), is_dir)
        self.staged.append(staged)
        return staged.target

    def inside(self, final):
        """Whether `final` lies inside one of the outputs staged here (a file of a folder output)."""
        final = Path(final).resolve()
        return any(s.is_dir and final.is_relative_to(s.tmp.resolve()) for s in self.staged)

    def commit(self):
        done = []
        try:
            for staged in self.staged:
                staged.swap_in()
                done.append(staged)
        except BaseException:
            for staged in reversed(done):
                staged.swap_back()
            raise
        self.discard()

    def discard(self):
        for staged in self.staged:
            staged.forget()
        self.staged = []


_current = []  # the StageOutputs of the running stage (`stage_outputs`), if any


@contextlib.contextmanager
def stage_outputs():
    """Collect every `atomic_path` (and `write_json`) of the block into one StageOutputs and
    commit them together when the block ends without an error; on an error, discard them all."""
    outputs = StageOutputs()
    _current.append(outputs)
    try:
        yield outputs
        _current.pop()
        outputs.commit()
    finally:
        if _current and _current[-1] is outputs:
            _current.pop()
        outputs.discard()


@contextlib.contextmanager
def atomic_path(final, is_dir=False):
    """Yield a temporary path beside `final`; on success swap it in for `final`, else delete it.

    Inside `stage_outputs()` (every stage's main runs in one, `run_stage`), the swap waits for the
    end of the stage, so that all of a stage's outputs change together or not at all; a file
    written inside a folder output being staged is simply written there. Outside, the swap comes
    when the block ends. A file replaces the old one in one atomic rename; a folder's old one is
    renamed aside first, then the new one in, and only then is the old one deleted. Temporaries
    are named `.NAME.PID.*.tmp`; those of a killed process are removed by the next write of the
    same output. A file output whose path is an existing folder (or the reverse) is refused:
    that is a wrong path, not stale output.
    """
    transaction = _current[-1] if _current else None
    if transaction is not None and not transaction.inside(final):
        yield transaction.path(final, is_dir)
        return
    with stage_outputs() as alone:
        yield alone.path(final, is_dir)


def run_stage(name, main, errors=()):
    """Run a stage's `main()` with all its outputs committed together at its end
    (`stage_outputs`). An expected failure (StageError, a missing input, or one of `errors`)
    becomes one line, `NAME: error: ...`, and exit status 1; no output has changed then."""
    import sys

    try:
        with stage_outputs():
            main()
    except (StageError, FileNotFoundError, *errors) as err:
        sys.exit(f"{name}: error: {err}")


def write_json(path, data):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path, stage, needs=()):
    """The JSON object in `path`, written by the dvc.yaml stage `stage`, with every dotted key of
    `needs` present (e.g. "data.test_images"); else a StageError that names the file, what is
    wrong and the command that writes it again."""
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


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cpu_name(cpuinfo=Path("/proc/cpuinfo")):
    """The first CPU's model name, with its family and model numbers where the name alone is a
    cloud's generic one ("AMD EPYC" is both a Zen 4 and a Zen 5 host, 2x apart in speed)."""
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
    """The machine a number was measured on: CPU model, core count and any GPUs TF sees."""
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import tensorflow as tf

        info["gpus"] = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info
