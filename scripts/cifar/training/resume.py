"""The resume state: the folder a training run keeps between attempts, stamped with what made it
(settings, data, code, weights); state made by anything else is discarded, never continued."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from cifar.outputs import StageError


def digest(*arrays):
    """sha256 of numpy arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _whole_zip(path):
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class ResumeState:
    """identity.json, best.keras, live/ (the DVCLive log, or its copy), backup/ (BackupAndRestore)
    and, once fit() has returned, result.json."""

    def __init__(self, folder, identity):
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.best = self.folder / "best.keras"
        self.live = self.folder / "live"
        self.backup = self.folder / "backup"
        self.result = self.folder / "result.json"
        stamp = self.folder / "identity.json"
        if self.folder.exists():
            try:
                old = json.loads(stamp.read_text())
            except (OSError, ValueError):
                old = None
            if old != self.identity:
                print(f"Discarding resume state in {self.folder}: it was made with {self._changes(old)}")
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            stamp.write_text(json.dumps(self.identity, indent=1, sort_keys=True))

    def _changes(self, old):
        if not isinstance(old, dict):
            return "settings it did not record"
        changed = self._changed(old)
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        return f"other settings or inputs (changed: {shown})"

    def _changed(self, other):
        before, now = _flatten(other), _flatten(self.identity)
        return sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))

    def finished(self, need_model=True):
        """(rows, summary) of a run that completed but whose outputs were not written, or None."""
        if not self.result.is_file():
            return None
        if need_model and not _whole_zip(self.best):
            print(f"The finished run in {self.folder} left an incomplete best model; training again")
            return None
        done = json.loads(self.result.read_text())
        return done["rows"], done["summary"]

    def _backup_epoch(self):
        """The epoch BackupAndRestore will resume at, after making its files agree: a kill between its
        writes can leave unreadable metadata or weights without metadata; then the .bkp pair, else a
        fresh start."""
        weights, meta = self.backup / "latest.weights.h5", self.backup / "training_metadata.json"
        saved_weights, saved_meta = Path(f"{weights}.bkp"), Path(f"{meta}.bkp")

        def epoch_in(path):
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                return None

        def readable(path):
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    f.visit(lambda name: None)
                return True
            except (OSError, ValueError, RuntimeError):
                return False

        epoch = epoch_in(meta)
        if epoch is not None and readable(weights):
            return epoch
        saved = epoch_in(saved_meta)
        if saved is not None and readable(saved_weights):
            shutil.copyfile(saved_weights, weights)
            shutil.copyfile(saved_meta, meta)
            return saved
        shutil.rmtree(self.backup, ignore_errors=True)
        return 0

    def start_epoch(self):
        """The first epoch to run: the backup's, or 0 with an earlier attempt's leftovers cleared."""
        epoch = self._backup_epoch() if self.backup.exists() else 0
        return epoch if epoch else self.restart()

    def restart(self):
        """Clear every leftover of an earlier attempt; the first epoch, 0."""
        shutil.rmtree(self.backup, ignore_errors=True)
        shutil.rmtree(self.live, ignore_errors=True)
        for leftover in (self.best, self.result):
            leftover.unlink(missing_ok=True)
        return 0

    def pack(self):
        """The state without the best model, as tar bytes, for the other workers."""
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(self.folder.rglob("*")):
                if path.is_file() and path != self.best:
                    tar.add(path, arcname=path.relative_to(self.folder).as_posix())
        return buffer.getvalue()

    def unpack(self, payload, who):
        """Replace this state with the chief's `pack()`, refusing another run's."""
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
            theirs = json.loads(tar.extractfile("identity.json").read())
            if theirs != self.identity:
                raise StageError(f"{who} runs another training than the chief (differs in: "
                                 f"{', '.join(self._changed(theirs)[:4])}); "
                                 "start every worker from the same commit, params.yaml and data")
            shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            tar.extractall(self.folder, filter="data")

    def finish(self, rows, summary):
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": rows, "summary": summary}))
        tmp.replace(self.result)
