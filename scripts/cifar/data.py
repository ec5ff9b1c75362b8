"""CIFAR-10: fetch the official "python version" archive, verify it, read it, split it.

The archive holds pickles, and unpickling runs code, so nothing is unpickled before the
archive's sha256 has matched the one the user trusts.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np

from cifar.outputs import atomic_path, sha256_of

ARCHIVE_NAME = "cifar-10-python.tar.gz"
MEMBER_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


class ArchiveError(ValueError):
    """The archive is missing, does not match its checksum, or is not CIFAR-10 inside."""


def read_sha256_file(path, name):
    """The digest listed for `name` in a `sha256sum`-style file, or None."""
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0].lower()
    return None


def verify(path, expected_sha256):
    """Raise ArchiveError unless the file at `path` has the expected sha256."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"archive not found: {path}")
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise ArchiveError(
            f"checksum mismatch for {path}: sha256 is {actual}, expected {expected_sha256}. "
            "The file is corrupt, incomplete, or not the archive you meant; "
            "fetch it again or give the sha256 of the copy you trust."
        )
    return actual


def fetch(url, sha256, dest):
    """Download the archive with Keras' cached, hash-checked downloader and copy it to `dest`."""
    import keras

    cached = keras.utils.get_file(
        fname=ARCHIVE_NAME, origin=url, file_hash=sha256, hash_algorithm="sha256"
    )
    return copy_verified(cached, sha256, dest)


def copy_verified(src, sha256, dest):
    """Copy a local archive to `dest` after checking its sha256; write `dest`.sha256 beside it."""
    verify(src, sha256)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        verify(tmp, sha256)  # the copy itself, in case the source changed while we read it
    Path(f"{dest}.sha256").write_text(f"{sha256}  {dest.name}\n")
    return dest


def _unpickle(tar, member, archive):
    name = f"{MEMBER_DIR}/{member}"
    try:
        handle = tar.extractfile(name)
    except KeyError:
        raise ArchiveError(f"corrupted archive: {archive} has no member {name}") from None
    if handle is None:
        raise ArchiveError(f"corrupted archive: {archive}: {name} is not a regular file")
    try:
        return pickle.load(io.BytesIO(handle.read()), encoding="bytes")
    except (EOFError, OSError, zlib.error, tarfile.TarError) as err:
        raise ArchiveError(f"corrupted archive: {archive}: cannot read {name}: {err}") from None
    except Exception as err:  # a pickle that is not a CIFAR batch can raise almost anything
        raise ArchiveError(f"corrupted archive: {archive}: {name} is not a valid pickle: {err}") from None


def _batch_arrays(batch, member, archive, expected_count):
    where = f"corrupted archive: {archive}: {member}"
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ArchiveError(f"{where} lacks the b'data' and b'labels' entries of a CIFAR-10 batch")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise ArchiveError(f"{where}: data is {dtype} of shape {shape}, expected uint8 (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data):
        raise ArchiveError(f"{where}: {len(labels)} labels for {len(data)} images")
    if len(data) != expected_count:
        raise ArchiveError(
            f"{where}: {len(data)} images, expected {expected_count} (num_cases_per_batch in batches.meta)"
        )
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ArchiveError(f"{where}: labels out of range; expected integers 0-{NUM_CLASSES - 1}")
    # Rows are R plane | G plane | B plane, each 32x32 row-major: to NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def read(path, expected_sha256):
    """Verify the archive, then return its images, labels and class names.

    Returns (x_train, y_train, x_test, y_test, class_names): images uint8 NHWC, labels uint8.
    The expected counts come from batches.meta (10,000 per batch for the official data set).
    """
    verify(path, expected_sha256)
    try:
        with tarfile.open(path, "r:gz") as tar:
            meta = _unpickle(tar, "batches.meta", path)
            try:
                names = [n.decode() for n in meta[b"label_names"]]
                per_batch = int(meta[b"num_cases_per_batch"])
            except (KeyError, TypeError, AttributeError, ValueError):
                raise ArchiveError(f"corrupted archive: {path}: batches.meta lacks label_names or num_cases_per_batch") from None
            if len(names) != NUM_CLASSES:
                raise ArchiveError(f"corrupted archive: {path}: batches.meta names {len(names)} classes, expected {NUM_CLASSES}")
            train = [_batch_arrays(_unpickle(tar, b, path), b, path, per_batch) for b in TRAIN_BATCHES]
            x_test, y_test = _batch_arrays(_unpickle(tar, TEST_BATCH, path), TEST_BATCH, path, per_batch)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ArchiveError(f"corrupted archive: {path}: not a readable .tar.gz ({err})") from None
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test, names


def split(x, y, val_fraction, seed):
    """The seed's split: train_test_split(test_size=val_fraction, random_state=seed)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=val_fraction, random_state=seed)


def save_prepared(path, arrays):
    """Write the named uint8 arrays (plus metadata) as one uncompressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_prepared(path, stage_hint="prepare"):
    """Load what `prepare` wrote, with a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is written by the '{stage_hint}' stage; run `dvc repro {stage_hint}` first"
        )
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}
