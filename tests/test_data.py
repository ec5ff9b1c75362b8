import json

import numpy as np
import pytest

import synthetic
from cifar import data
from conftest import run, script


def test_read_synthetic_archive(archive):
    path, sha = archive
    x_train, y_train, x_test, y_test, names = data.read(path, sha)
    assert x_train.shape == (200, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (40, 32, 32, 3)
    assert names == synthetic.NAMES
    assert y_train.max() <= 9 and y_test.dtype == np.uint8
    # Rows are R plane | G plane | B plane: pixel (0, 0) of image 0 takes index 0, 1024, 2048.
    row = synthetic.batch(40, seed=0)[b"data"][0]
    assert x_train[0, 0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert x_train[0, 2, 5, 1] == row[1024 + 2 * 32 + 5]


def test_split_is_the_seeds_train_test_split():
    from sklearn.model_selection import train_test_split

    x, y = np.arange(100).reshape(100, 1), np.arange(100) % 10
    ours = data.split(x, y, 0.2, 42)
    theirs = train_test_split(x, y, test_size=0.2, random_state=42)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_copy_verified_writes_archive_and_digest(archive, tmp_path):
    path, sha = archive
    dest = data.copy_verified(path, sha, tmp_path / "raw" / data.ARCHIVE_NAME)
    assert dest.read_bytes() == path.read_bytes()
    assert data.read_sha256_file(f"{dest}.sha256", data.ARCHIVE_NAME) == sha


def test_prepare_stage_on_synthetic_archive(workdir, archive):
    path, sha = archive
    raw = workdir / "raw"
    data.copy_verified(path, sha, raw / data.ARCHIVE_NAME)
    proc = run(["python", script("prepare"), "--archive", f"raw/{data.ARCHIVE_NAME}",
                "--out", "prepared/cifar10.npz", "--metrics", "metrics/prepare.json"], cwd=workdir)
    for line in ("y_train shape: (160, 10)", "y_val shape: (40, 10)", "y_test shape: (40, 10)"):
        assert line in proc.stdout
    arrays = data.load_prepared(workdir / "prepared" / "cifar10.npz")
    assert arrays["x_train"].shape == (160, 32, 32, 3) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_val"].shape == (40, 32, 32, 3)
    assert str(arrays["archive_sha256"]) == sha
    metrics = json.loads((workdir / "metrics" / "prepare.json").read_text())
    assert metrics["counts"] == {"train": 160, "val": 40, "test": 40}
    assert sum(metrics["per_class"]["val"].values()) == 40
    assert metrics["source"]["sha256"] == sha


def _prepare(workdir, path, sha):
    """Place `path` as the downloaded archive with digest `sha` and run prepare on it."""
    raw = workdir / "raw"
    raw.mkdir(exist_ok=True)
    (raw / data.ARCHIVE_NAME).write_bytes(path.read_bytes())
    (raw / f"{data.ARCHIVE_NAME}.sha256").write_text(f"{sha}  {data.ARCHIVE_NAME}\n")
    proc = run(["python", script("prepare"), "--archive", f"raw/{data.ARCHIVE_NAME}",
                "--out", "prepared/cifar10.npz", "--metrics", "metrics/prepare.json"],
               cwd=workdir, check=False)
    assert proc.returncode != 0, proc.stdout
    assert not (workdir / "prepared").exists() and not (workdir / "metrics").exists()
    return proc.stderr


def test_truncated_archive(workdir, tmp_path, archive):
    path, _ = archive
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    err = _prepare(workdir, truncated, synthetic.sha256(truncated))
    assert "prepare: error: corrupted archive" in err and "not a readable .tar.gz" in err


def test_wrong_checksum_is_refused_before_unpickling(workdir, archive):
    path, sha = archive
    err = _prepare(workdir, path, "0" * 64)
    assert f"checksum mismatch for raw/{data.ARCHIVE_NAME}: sha256 is {sha}, expected {'0' * 64}" in err


def test_archive_missing_a_batch(workdir, tmp_path):
    path = synthetic.write_archive(tmp_path / "missing.tar.gz", skip={"data_batch_3"})
    err = _prepare(workdir, path, synthetic.sha256(path))
    assert "has no member cifar-10-batches-py/data_batch_3" in err


def test_labels_out_of_range(workdir, tmp_path):
    def bad_labels(name, batch):
        if name == "data_batch_2":
            batch[b"labels"][7] = 10

    path = synthetic.write_archive(tmp_path / "labels.tar.gz", edit=bad_labels)
    err = _prepare(workdir, path, synthetic.sha256(path))
    assert "data_batch_2: labels out of range; expected integers 0-9" in err


def test_wrong_shape_and_count(tmp_path):
    def bad_shape(name, batch):
        if name == "test_batch":
            batch[b"data"] = batch[b"data"][:, :3000]

    path = synthetic.write_archive(tmp_path / "shape.tar.gz", edit=bad_shape)
    with pytest.raises(data.ArchiveError, match=r"test_batch: data is uint8 of shape \(40, 3000\), expected uint8 \(N, 3072\)"):
        data.read(path, synthetic.sha256(path))

    def short(name, batch):
        if name == "data_batch_5":
            batch[b"data"], batch[b"labels"] = batch[b"data"][:30], batch[b"labels"][:30]

    path = synthetic.write_archive(tmp_path / "short.tar.gz", edit=short)
    with pytest.raises(data.ArchiveError, match="data_batch_5: 30 images, expected 40"):
        data.read(path, synthetic.sha256(path))


def test_download_offline_copy_checks_the_given_sha(workdir, archive):
    path, sha = archive
    out = f"raw/{data.ARCHIVE_NAME}"
    proc = run(["python", script("download"), "--out", out], cwd=workdir, check=False,
               CIFAR10_ARCHIVE=str(path), CIFAR10_SHA256="f" * 64)
    assert proc.returncode != 0
    assert f"checksum mismatch for {path}" in proc.stderr
    assert not (workdir / "raw").exists() or not any((workdir / "raw").iterdir())

    proc = run(["python", script("download"), "--out", out], cwd=workdir, check=False, CIFAR10_ARCHIVE=str(path))
    assert proc.returncode != 0 and "no sha256 was given" in proc.stderr

    (path.parent / "SHA256SUMS").write_text(f"{sha}  {path.name}\n")
    run(["python", script("download"), "--out", out], cwd=workdir, CIFAR10_ARCHIVE=str(path))
    assert (workdir / out).read_bytes() == path.read_bytes()


def test_load_prepared_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="written by the 'prepare' stage; run `dvc repro prepare`"):
        data.load_prepared(tmp_path / "nope.npz")
