"""Checks on the real CIFAR-10 mirror, when it is present beside the repository."""

import numpy as np
import pytest

from cifar import data
from conftest import MIRROR, cnn_section, require_shared, seed_train, shared_section

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real():
    require_shared(MIRROR)
    sha = data.read_sha256_file(MIRROR.with_name("SHA256SUMS"), MIRROR.name)
    return sha, data.read(MIRROR, sha)


def test_mirror_checksum_and_counts(real):
    sha, (x_train, y_train, x_test, y_test, names) = real
    assert sha == data.verify(MIRROR, sha)
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(y_train).tolist() == [5000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    assert names[0] == "airplane" and names[-1] == "truck"
    assert y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def test_training_set_channel_means(real):
    _, (x_train, *_) = real
    mean = x_train.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=5e-4)


def test_seed_split_sizes(real):
    _, (x_train, y_train, *_) = real
    x_tr, x_val, y_tr, y_val = data.split(x_train, y_train, 0.2, 42)
    assert len(x_tr) == 40_000 and len(x_val) == 10_000


def test_cnn_learns_on_a_real_slice(real, tmp_path):
    """CI-sized: 2 epochs on 5,000 real training images.

    The check is on training accuracy: after ~300 steps BatchNormalization's moving statistics
    still lag the fast-changing activations, so validation accuracy of so short a run says more
    about that lag than about learning (the full run reaches 40% validation accuracy after its
    first 625 steps).
    """
    from cifar import training
    from cifar.models import cnn

    _, (x_train, y_train, x_test, y_test, _) = real
    arrays = {"x_train": x_train[:5000], "y_train": y_train[:5000], "x_val": x_test[:500], "y_val": y_test[:500]}
    train = seed_train(epochs=2, batch_size=32, augment=False)
    _, rows, _ = training.fit(lambda: cnn.build(cnn_section(convs_per_block=1)), arrays, train,
                              shared_section()["augment"], 42,
                              tmp_path / "state")
    assert rows[-1]["loss"] < rows[0]["loss"] < 2.3  # below chance-level cross-entropy, ln(10)
    assert rows[-1]["accuracy"] > 0.35, rows  # chance is 0.10
