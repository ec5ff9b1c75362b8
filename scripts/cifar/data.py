"""CIFAR-10: fetch the official "python version" archive, verify it, read it, split it.

Nothing is unpickled before the archive's sha256 matches the one the user trusts
(`trusted_sha256`), and even then only what a CIFAR-10 batch holds is admitted (BatchUnpickler)."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cifar.outputs import StageError, atomic_path, sha256_of

ARCHIVE_NAME = "cifar-10-python.tar.gz"
MEMBER_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
# What every model takes and gives, named once: the other modules import these.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASS_NAMES)
SIDE = 32  # px: CIFAR-10 images are SIDE x SIDE RGB
IMAGE_SHAPE = (SIDE, SIDE, 3)


class ArchiveError(StageError, ValueError):
    """The archive is missing, does not match its checksum, or is not CIFAR-10 inside."""


class PreparedDataError(StageError, ValueError):
    """The prepared .npz exists but cannot be read (truncated, overwritten, not an .npz)."""


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


def offline_copy():
    """The path CIFAR10_ARCHIVE names (an offline copy of the archive), or None."""
    archive = os.environ.get("CIFAR10_ARCHIVE")
    return Path(archive) if archive else None


def trusted_sha256(official_sha256):
    """(sha256, where it came from): CIFAR10_SHA256, or the SHA256SUMS beside CIFAR10_ARCHIVE, else
    `official_sha256` (download.sha256)."""
    given = os.environ.get("CIFAR10_SHA256")
    if given:
        return given.strip().lower(), "CIFAR10_SHA256"
    archive = offline_copy()
    if archive is None:
        return official_sha256, "download.sha256, the official archive's"
    sums = archive.with_name("SHA256SUMS")
    listed = read_sha256_file(sums, archive.name) if sums.is_file() else None
    if not listed:
        raise ArchiveError(
            f"CIFAR10_ARCHIVE={archive} is set but no sha256 was given: set CIFAR10_SHA256 "
            f"to the archive's sha256, or put a SHA256SUMS file listing it beside the archive"
        )
    return listed, f"the SHA256SUMS beside {archive}"


def fetch(url, sha256, dest):
    """Download the archive with Keras' cached, hash-checked downloader and copy it to `dest`."""
    import keras

    try:
        cached = keras.utils.get_file(
            fname=ARCHIVE_NAME, origin=url, file_hash=sha256, hash_algorithm="sha256"
        )
    except Exception as err:  # urllib, socket and Keras' own errors: all mean no archive
        raise ArchiveError(
            f"could not download {url} ({type(err).__name__}: {err}). The 'download' stage writes "
            f"{dest} from it; offline, set CIFAR10_ARCHIVE to a local copy of {ARCHIVE_NAME} "
            "(and CIFAR10_SHA256 to its sha256), see docs/pipeline.md, 'Offline copies'"
        ) from None
    return copy_verified(cached, sha256, dest)


def copy_verified(src, sha256, dest):
    """Copy a local archive to `dest` after checking its sha256."""
    verify(src, sha256)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        verify(tmp, sha256)  # the copy itself, in case the source changed while we read it
    return dest


def _reconstruct():
    """numpy's array rebuilder under the name the pickle gives it (numpy.core in numpy 1, numpy._core in
    2): a name of numpy's pickle format, not an API we choose (test_data unpickles the real archive)."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_bytes(text, encoding="latin1"):
    """What pickle protocols 0-2 of Python 3 call to rebuild a bytes object, and nothing more."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not how bytes are pickled")
    return text.encode("latin1")


class BatchUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 batch holds: containers, bytes, str, numbers, numpy arrays (three
    numpy names) and the latin-1 encode of bytes pickled at protocol 2 or lower."""

    ALLOWED = {
        ("_codecs", "encode"): lambda: _latin1_bytes,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    }

    def find_class(self, module, name):
        make = self.ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds")
        return make()


def _unpickle(tar, member, archive):
    name = f"{MEMBER_DIR}/{member}"
    try:
        handle = tar.extractfile(name)
    except KeyError:
        raise ArchiveError(f"corrupted archive: {archive} has no member {name}") from None
    if handle is None:
        raise ArchiveError(f"corrupted archive: {archive}: {name} is not a regular file")
    try:
        return BatchUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
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
    """Verify the archive, then (x_train, y_train, x_test, y_test, class_names): uint8 NHWC images and
    uint8 labels, counts checked against batches.meta."""
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
    """The seed's train_test_split(test_size=val_fraction, random_state=seed); a StageError naming the
    params when either side would be empty."""
    import math

    from sklearn.model_selection import train_test_split

    val = math.ceil(len(y) * val_fraction)  # as scikit-learn rounds a fractional test_size
    if val < 1 or len(y) - val < 1:
        raise StageError(f"{len(y)} training images split with prepare.val_fraction {val_fraction} leave "
                         f"{len(y) - val} to train on and {val} to validate with; both need at least one: "
                         "raise prepare.train_limit (0 keeps all) or change prepare.val_fraction")
    return train_test_split(x, y, test_size=val_fraction, random_state=seed)


def save_prepared(path, arrays):
    """The arrays as one uncompressed .npz, atomically, every member at a fixed timestamp: the same
    arrays give the same bytes, so DVC does not rerun later stages when prepare's code changes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as npz:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with npz.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_prepared(path, stage_hint="prepare"):
    """Load what `prepare` wrote, with a clear error if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is written by the '{stage_hint}' stage; run `dvc repro {stage_hint}` first"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as err:
        raise PreparedDataError(
            f"{path} is not a readable prepared data file ({type(err).__name__}: {err}); it is written "
            f"by the '{stage_hint}' stage: run `dvc repro --force {stage_hint}` to write it again"
        ) from None
