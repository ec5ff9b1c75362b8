"""AugMix (cifar.augmix): its operations, their disjointness from the robustness suite, and
draws that depend on (seed, epoch, image) only."""

import numpy as np
import pytest

from cifar import augment, augmix, corruptions


def images(count=6, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(i, (5, 5), 1.5) for i in rng.integers(0, 256, (count, 32, 32, 3), np.uint8)])


SETTINGS = {"severity": 3, "width": 3, "depth": 0, "alpha": 1.0}


def test_the_training_operations_are_disjoint_from_the_corruptions_measured():
    assert not set(augmix.OPERATIONS) & set(corruptions.CORRUPTIONS)
    # AugMix's own rule: the operations that overlap the corruptions are left out, each named.
    assert not set(augmix.OPERATIONS) & set(augmix.EXCLUDED)
    assert {"contrast", "brightness", "color", "sharpness"} == set(augmix.EXCLUDED)
    assert "contrast" in corruptions.CORRUPTIONS and "saturate" in corruptions.CORRUPTIONS


@pytest.mark.parametrize("name", list(augmix.OPERATIONS))
def test_each_operation_keeps_a_uint8_image_and_changes_some(name):
    rng = np.random.default_rng(1)
    changed = 0
    for image in images():
        out = augmix.OPERATIONS[name](image, rng, 3)
        assert out.shape == image.shape and out.dtype == np.uint8
        changed += not np.array_equal(out, image)
    assert changed >= 1, name


def test_solarize_and_posterize_do_what_they_say():
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :32, None], (32, 1, 3))
    bright = np.full((32, 32, 3), 250, np.uint8)
    assert (augmix.solarize(bright, np.random.default_rng(0), 3) == 5).all()  # inverted above the threshold
    poster = augmix.posterize(ramp, np.random.default_rng(0), 3)
    assert len(np.unique(poster)) <= 16 and (poster <= ramp).all()


def test_a_batchs_mix_depends_on_seed_epoch_and_image_only():
    x = images(8)
    index = np.arange(100, 108)
    whole = augmix.augmix_batch(x, index, seed=7, epoch=2, config=SETTINGS)
    halves = np.concatenate([augmix.augmix_batch(x[:3], index, 7, 2, SETTINGS, start=0),
                             augmix.augmix_batch(x[3:], index, 7, 2, SETTINGS, start=3)])
    assert np.array_equal(whole, halves)  # a split batch (replicas) gets the same draws
    assert not np.array_equal(whole, augmix.augmix_batch(x, index, 7, 3, SETTINGS))  # another epoch
    assert np.array_equal(whole, augmix.augmix_batch(x, index, 7, 2, SETTINGS))
    # The mix stays close to the image on average: a convex mix of it and its chains.
    assert np.abs(whole.astype(float) - x).mean() < 60


def test_the_stream_applies_augmix_after_flip_translate():
    x = images(16)
    y = np.arange(16) % 10
    config = {"policy": "augmix", "translate_px": 2, "augmix": SETTINGS}
    plain = {"policy": "flip_translate", "translate_px": 2}
    first = next(iter(augment.train_dataset(x, y, 8, 3, config)))[0].numpy()
    again = next(iter(augment.train_dataset(x, y, 8, 3, config)))[0].numpy()
    flipped = next(iter(augment.train_dataset(x, y, 8, 3, plain)))[0].numpy()
    assert np.array_equal(first, again) and not np.array_equal(first, flipped)
