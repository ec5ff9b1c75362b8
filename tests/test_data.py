import json

import numpy as np
import pytest

import synthetic
from cifar import data
import yaml

import os

from conftest import REPO, run, script, set_param
from pathlib import Path


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


def run_prepare(workdir, archive_path, check=True, **env):
    """Place `archive_path` where `download` puts it and run the prepare stage on it."""
    raw = workdir / "raw"
    raw.mkdir(exist_ok=True)
    (raw / data.ARCHIVE_NAME).write_bytes(archive_path.read_bytes())
    return run(["python", script("prepare"), "--archive", f"raw/{data.ARCHIVE_NAME}",
                "--out", "prepared/cifar10.npz", "--metrics", "metrics/prepare.json"],
               cwd=workdir, check=check, **env)


@pytest.mark.parametrize("seed", [42, 7])
def test_prepare_splits_with_the_seeds_train_test_split(workdir, archive, seed):
    """The val split is the seed's train_test_split(test_size=0.2, random_state=prepare.split_seed),
    checked on what the stage wrote (a prepare that drops random_state fails here)."""
    from sklearn.model_selection import train_test_split

    path, sha = archive
    set_param(workdir, "prepare.split_seed", seed)
    set_param(workdir, "shared.seed", 1)  # the training's: not the split's
    run_prepare(workdir, path, CIFAR10_SHA256=sha)
    arrays = data.load_prepared(workdir / "prepared" / "cifar10.npz")
    x, y, *_ = data.read(path, sha)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=seed)
    np.testing.assert_array_equal(arrays["x_val"], x_val)
    np.testing.assert_array_equal(arrays["y_train"], y_train)
    other = train_test_split(x, y, test_size=0.2, random_state=seed + 1)[1]
    assert not np.array_equal(arrays["x_val"], other)


def test_copy_verified_writes_only_the_archive(archive, tmp_path):
    path, sha = archive
    dest = data.copy_verified(path, sha, tmp_path / "raw" / data.ARCHIVE_NAME)
    assert dest.read_bytes() == path.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [data.ARCHIVE_NAME]


def test_prepared_file_is_byte_reproducible(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "names": np.array(["a", "b"])}
    data.save_prepared(tmp_path / "a.npz", arrays)
    import time
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    data.save_prepared(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = data.load_prepared(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    assert loaded["names"].tolist() == ["a", "b"]


def test_truncated_prepared_file_names_the_stage(tmp_path):
    data.save_prepared(tmp_path / "cifar10.npz", {"x": np.zeros((100, 100), np.uint8)})
    whole = (tmp_path / "cifar10.npz").read_bytes()
    (tmp_path / "cifar10.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(data.PreparedDataError, match=r"cifar10.npz is not a readable prepared data file .*"
                       r"written by the 'prepare' stage: run `dvc repro --force prepare`"):
        data.load_prepared(tmp_path / "cifar10.npz")


class WritesAFile:
    """A pickle payload whose unpickling creates a file: what a hostile archive would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def hostile_archive(tmp_path, target):
    def payload(name, batch):
        if name == "data_batch_1":
            batch[b"batch_label"] = WritesAFile(target)

    return synthetic.write_archive(tmp_path / "hostile.tar.gz", edit=payload)


def test_a_hostile_pickle_never_runs_even_with_its_own_digest(workdir, tmp_path):
    """Its digest is the one the user gave, so the checksum passes; the restricted unpickler
    must still refuse it, naming the archive."""
    target = tmp_path / "pwned"
    path = hostile_archive(tmp_path, target)
    proc = run_prepare(workdir, path, check=False, CIFAR10_SHA256=synthetic.sha256(path))
    assert proc.returncode == 1 and not target.exists()
    assert f"prepare: error: corrupted archive: raw/{data.ARCHIVE_NAME}: cifar-10-batches-py/data_batch_1" in proc.stderr
    assert "pathlib.Path.touch" in proc.stderr or "refers to pathlib" in proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "prepared").exists()


def test_a_digest_written_beside_the_archive_is_not_trusted(workdir, tmp_path):
    """Nothing the pipeline (or anyone) writes into data/raw vouches for the archive: with no
    digest given, it is checked against download.sha256, before anything is unpickled."""
    target = tmp_path / "pwned"
    path = hostile_archive(tmp_path, target)
    sha = synthetic.sha256(path)
    (workdir / "raw").mkdir()
    (workdir / "raw" / f"{data.ARCHIVE_NAME}.sha256").write_text(f"{sha}  {data.ARCHIVE_NAME}\n")
    (workdir / "raw" / "SHA256SUMS").write_text(f"{sha}  {data.ARCHIVE_NAME}\n")
    proc = run_prepare(workdir, path, check=False)
    assert proc.returncode == 1 and not target.exists()
    official = yaml.safe_load((workdir / "params.yaml").read_text())["download"]["sha256"]
    assert f"checksum mismatch for raw/{data.ARCHIVE_NAME}: sha256 is {sha}, expected {official}" in proc.stderr


def test_restricted_unpickler_admits_a_cifar_batch_and_nothing_else():
    import io
    import pickle

    batch = synthetic.batch(4, seed=0)
    loaded = data.BatchUnpickler(io.BytesIO(pickle.dumps(batch, protocol=2)), encoding="bytes").load()
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    for hostile in (pickle.dumps({b"x": Path("/")}), pickle.dumps([print]),
                    pickle.dumps(np.array([Path("/")], dtype=object))):
        with pytest.raises(pickle.UnpicklingError, match="which a CIFAR-10 batch never holds"):
            data.BatchUnpickler(io.BytesIO(hostile), encoding="bytes").load()


def test_prepare_stage_on_synthetic_archive(workdir, archive):
    path, sha = archive
    proc = run_prepare(workdir, path, CIFAR10_SHA256=sha)
    for line in ("y_train shape: (160, 10)", "y_val shape: (40, 10)", "y_test shape: (40, 10)"):
        assert line in proc.stdout
    # TensorFlow's GPU-build noise on a CPU machine is filtered; nothing else is on stderr.
    assert proc.stderr.strip() == "", proc.stderr
    arrays = data.load_prepared(workdir / "prepared" / "cifar10.npz")
    assert arrays["x_train"].shape == (160, 32, 32, 3) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_val"].shape == (40, 32, 32, 3)
    assert str(arrays["archive_sha256"]) == sha
    metrics = json.loads((workdir / "metrics" / "prepare.json").read_text())
    assert metrics["counts"] == {"train": 160, "val": 40, "test": 40}
    assert sum(metrics["per_class"]["val"].values()) == 40
    assert metrics["source"]["sha256"] == sha


def test_tensorflow_noise_is_quiet_by_default_and_shown_on_request(tmp_path):
    code = "from cifar import models\nimport tensorflow as tf\nprint(tf.reduce_sum(tf.ones(3)).numpy())"
    quiet = run(["python", "-c", code], cwd=REPO / "scripts")
    assert quiet.stdout.strip() == "3.0" and quiet.stderr.strip() == "", quiet.stderr
    verbose = run(["python", "-c", code], cwd=REPO / "scripts", CIFAR10_VERBOSE="1")
    assert verbose.stdout.strip() == "3.0"
    if not os.path.exists("/dev/nvidia0"):  # a CPU-only machine: TF's GPU build says so, loudly
        assert "cuInit" in verbose.stderr or "cuda" in verbose.stderr.lower()


def _prepare(workdir, path, sha):
    """Run prepare on `path` as the downloaded archive, with `sha` the digest the user gave."""
    proc = run_prepare(workdir, path, check=False, CIFAR10_SHA256=sha)
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


def test_download_failure_offline_is_one_clear_line(workdir, tmp_path):
    """No network (here: a closed local port) gives an error naming the URL, the stage and the
    offline way, not a traceback."""
    set_param(workdir, "download.url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    proc = run(["python", script("download"), "--out", f"raw/{data.ARCHIVE_NAME}"], cwd=workdir, check=False,
               KERAS_HOME=str(tmp_path / "keras"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "download: error: could not download http://127.0.0.1:9/cifar-10-python.tar.gz" in proc.stderr
    assert "The 'download' stage writes raw/cifar-10-python.tar.gz" in proc.stderr and "CIFAR10_ARCHIVE" in proc.stderr


def test_load_prepared_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="written by the 'prepare' stage; run `dvc repro prepare`"):
        data.load_prepared(tmp_path / "nope.npz")


def test_a_train_limit_too_small_to_split_is_one_line_before_any_output(workdir, archive):
    path, sha = archive
    values = yaml.safe_load((workdir / "params.yaml").read_text())
    values["prepare"]["train_limit"] = 1  # passes the schema; scikit-learn would raise on the split
    (workdir / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    proc = run_prepare(workdir, path, check=False, CIFAR10_SHA256=sha)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "prepare: error: 1 training images split with prepare.val_fraction 0.2 leave 0 to train on" in proc.stderr
    assert not (workdir / "prepared").exists() and not (workdir / "metrics").exists()


def test_offline_mobilenet_weights_need_a_digest_and_source_json_says_which(workdir, tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"weights")  # fetch_weights copies and hashes; MobileNetV2 reads it later

    def fetch(name, **env):
        return run(["python", script("fetch_weights"), "--name", name, "--out", f"pretrained/{name}"], cwd=workdir,
                   check=False, MOBILENET_WEIGHTS=str(weights), **env)

    proc = fetch("mobilenet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no sha256 was given to check it against" in proc.stderr and not (workdir / "pretrained/mobilenet").exists()
    proc = fetch("mobilenet", MOBILENET_WEIGHTS_SHA256="f" * 64)
    assert proc.returncode == 1 and "checksum mismatch" in proc.stderr
    assert fetch("mobilenet", MOBILENET_WEIGHTS_SHA256=data.sha256_of(weights)).returncode == 0
    source = json.loads((workdir / "pretrained" / "mobilenet" / "source.json").read_text())
    assert source["sha256"] == data.sha256_of(weights) and source["sha256_checked_against"] == "MOBILENET_WEIGHTS_SHA256"
    # A model without pretrained weights gets its folder, naming no file, and needs none: no digest asked for.
    assert fetch("cnn").returncode == 0
    others = json.loads((workdir / "pretrained" / "cnn" / "source.json").read_text())
    assert others["file"] is None and others["origin"].startswith("none")
    assert sorted(p.name for p in (workdir / "pretrained" / "cnn").iterdir()) == ["source.json"]
