import cv2
import numpy as np
import pytest

from cifar import augment
from rates import random_resolution_transform  # the seed's transform, which bench's seed stream runs

CONFIG = {"policy": "seed", "resolution_scale": [0.8, 1.2], "rotation_degrees": 15, "shift_fraction": 0.1, "horizontal_flip": True}


class FixedScale:
    """Stands in for a numpy Generator whose uniform() always returns `value`."""

    def __init__(self, value):
        self.value = value

    def uniform(self, low, high):
        assert low <= self.value <= high
        return self.value


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, 32, 3), dtype=np.uint8).astype(np.float32) / 255.0


@pytest.mark.parametrize("scale, size", [(0.8, 25), (1.2, 38), (0.95, 30), (1.1, 35)])
def test_resolution_transform_shape_dtype_range(image, scale, size):
    out = random_resolution_transform(image, FixedScale(scale))
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert int(32 * scale) == size


def test_pad_branch_reflects_the_resized_image(image):
    out = np.rint(random_resolution_transform(image, FixedScale(0.8)) * 255).astype(np.uint8)
    resized = cv2.resize(np.rint(image * 255).astype(np.uint8), (25, 25))
    top = (32 - 25) // 2  # 3 rows above, 4 below
    np.testing.assert_array_equal(out[top : top + 25, top : top + 25], resized)
    # cv2.BORDER_REFLECT repeats the edge row: ...| r1 r0 | r0 r1 ...
    for k in range(top):
        np.testing.assert_array_equal(out[top - 1 - k, top : top + 25], resized[k])
        np.testing.assert_array_equal(out[top : top + 25, top - 1 - k], resized[:, k])
    np.testing.assert_array_equal(out[top + 25 + 3, top : top + 25], resized[-4])


def test_crop_branch_is_the_center_of_the_resized_image(image):
    out = np.rint(random_resolution_transform(image, FixedScale(1.2)) * 255).astype(np.uint8)
    resized = cv2.resize(np.rint(image * 255).astype(np.uint8), (38, 38))
    np.testing.assert_array_equal(out, resized[3:35, 3:35])


def test_affine_matrices_compose_flip_rotation_shift():
    rng = np.random.default_rng(1)
    angles, shifts, flips = rng.uniform(-15, 15, 20), rng.uniform(-3, 3, (20, 2)), rng.random(20) < 0.5
    for m, angle, shift, flip in zip(augment.affine_matrices(angles, shifts, flips), angles, shifts, flips):
        rotate = np.vstack([cv2.getRotationMatrix2D((15.5, 15.5), angle, 1.0), [0, 0, 1]])
        mirror = np.array([[-1.0, 0, 31], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
        move = np.array([[1.0, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
        np.testing.assert_allclose(m, (move @ rotate @ mirror)[:2], atol=1e-9)


def test_flip_only_batch_is_identity_or_mirror():
    images = np.random.default_rng(2).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    config = {"resolution_scale": [1.0, 1.0], "rotation_degrees": 0, "shift_fraction": 0, "horizontal_flip": True}
    out = augment.augment_batch(images, 7, config)
    same = [np.array_equal(o, i) for o, i in zip(out, images)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # about half are flipped


def test_augment_batch_is_seeded_and_changes_images():
    images = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    a, b = augment.augment_batch(images, 5, CONFIG), augment.augment_batch(images, 5, CONFIG)
    c = augment.augment_batch(images, 6, CONFIG)
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, images)


def _first_batches(ds, n):
    return [x.numpy() for (x, _), _ in zip(ds, range(n))]


def test_train_dataset_reproducible_and_redrawn_each_epoch():
    x = np.random.default_rng(4).integers(0, 256, (90, 32, 32, 3), dtype=np.uint8)
    y = np.arange(90) % 10
    whole = [b.numpy() for b, _ in augment.train_dataset(x, y, 32, seed=11, config=CONFIG, epochs=3)]
    assert [len(b) for b in whole] == [32, 32, 26] * 3  # epochs never share a batch
    again = [b.numpy() for b, _ in augment.train_dataset(x, y, 32, seed=11, config=CONFIG, epochs=3)]
    for a, b in zip(whole, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], whole[3])  # epoch 2 is drawn anew
    # A run resumed at epoch 2 (0-based 1) sees exactly the batches of an uninterrupted one.
    resumed = [b.numpy() for b, _ in augment.train_dataset(x, y, 32, seed=11, config=CONFIG, epochs=3, first_epoch=1)]
    assert len(resumed) == 6
    for a, b in zip(whole[3:], resumed):
        np.testing.assert_array_equal(a, b)
    other = next(iter(augment.train_dataset(x, y, 32, seed=12, config=CONFIG)))[0].numpy()
    assert not np.array_equal(whole[0], other)
    assert whole[0].dtype == np.float32 and whole[0].shape == (32, 32, 32, 3)
    # The first batch is the epoch's first 32 images, augmented: not the plain images, and with
    # their brightness (the transforms move and resample pixels; they do not change their values).
    plain = x[augment.epoch_order(len(x), 11, 0)[:32]].astype(np.float32)
    assert not np.array_equal(whole[0], plain)
    assert whole[0].mean() == pytest.approx(plain.mean(), rel=0.1)


def test_each_epoch_is_a_permutation_of_the_training_set():
    x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1) * np.ones((1, 32, 32, 3), np.uint8)
    y = np.arange(50)
    for epoch in range(2):
        labels = np.concatenate([l.numpy() for _, l in augment.train_dataset(
            x, y, 16, seed=3, config=CONFIG, augment=False, epochs=epoch + 1, first_epoch=epoch)])
        assert sorted(labels.tolist()) == list(range(50)) and labels.tolist() != list(range(50))
        np.testing.assert_array_equal(labels, augment.epoch_order(50, 3, epoch))


def test_eval_dataset_leaves_images_untouched():
    x = np.random.default_rng(5).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    y = np.arange(50) % 10
    batches = list(augment.eval_dataset(x, y, 16))
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b, _ in batches]), x.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([l.numpy() for _, l in batches]), y)


def test_unaugmented_train_stream_keeps_pixels():
    x = np.random.default_rng(6).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40)
    seen = {}
    for images, labels in augment.train_dataset(x, y, 8, seed=1, config=CONFIG, augment=False):
        for image, label in zip(images.numpy(), labels.numpy()):
            seen[int(label)] = image
    assert len(seen) == 40
    for label, image in seen.items():
        np.testing.assert_array_equal(image, x[label])


def test_drop_remainder_leaves_out_the_short_last_batch():
    x = np.zeros((50, 32, 32, 3), np.uint8)
    y = np.arange(50)
    batches = [len(l) for _, l in augment.train_dataset(x, y, 16, 1, CONFIG, augment=False, epochs=2, drop_remainder=True)]
    assert batches == [16, 16, 16] * 2 and augment.steps_per_epoch(50, 16, True) == 3
    assert augment.steps_per_epoch(50, 16) == 4
    assert augment.steps_per_epoch(50, 64, True) == 1  # fewer images than a batch: still one step


@pytest.mark.parametrize("n,parts", [(40, 2), (41, 2), (7, 3), (64, 4)])
def test_replicas_share_a_batch_in_consecutive_near_equal_parts(n, parts):
    shares = [augment.replica_slice(n, part, parts) for part in range(parts)]
    covered = np.concatenate([np.arange(n)[share] for share in shares])
    np.testing.assert_array_equal(covered, np.arange(n))
    sizes = [share.stop - share.start for share in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("policy", ["seed", "flip_translate"])
def test_a_batch_split_between_replicas_is_augmented_as_unsplit(policy):
    """Each replica's share of a batch gets exactly the transforms it gets in the whole batch."""
    x = np.random.default_rng(4).integers(0, 256, (90, 32, 32, 3), dtype=np.uint8)
    y = np.arange(90, dtype=np.int64)
    config = {"policy": "flip_translate", "translate_px": 2} if policy == "flip_translate" else CONFIG
    whole = list(augment.train_dataset(x, y, 30, 3, config, epochs=2).as_numpy_iterator())
    halves = [list(augment.train_dataset(x, y, 30, 3, config, epochs=2, replicas=(part, 1, 2)).as_numpy_iterator())
              for part in (0, 1)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 6
    for (images, labels), (a, la), (b, lb) in zip(whole, *halves):
        assert len(la) == len(lb) == 15
        np.testing.assert_array_equal(np.concatenate([la, lb]), labels)
        np.testing.assert_array_equal(np.concatenate([a, b]), images)
    # One stream feeding two replicas of a worker yields both shares of each step, in order.
    both = list(augment.train_dataset(x, y, 30, 3, config, epochs=1, replicas=(0, 2, 2)).as_numpy_iterator())
    assert len(both) == 6 and [len(labels) for _, labels in both] == [15] * 6
    np.testing.assert_array_equal(np.concatenate([both[0][1], both[1][1]]), whole[0][1])
