"""Checks on the real CIFAR-10 mirror, when it is present beside the repository."""

import numpy as np
import pytest

from cifar import data
from conftest import MIRROR

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not MIRROR.is_file(), reason=f"no offline mirror at {MIRROR}"),
]


@pytest.fixture(scope="module")
def real():
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
