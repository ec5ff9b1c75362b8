"""AugMix (cifar.augmix): its operations, their disjointness from the robustness suite, and
draws that depend on (seed, epoch, image) only: AugMix's own distribution, its PIL operations."""

import numpy as np
import pytest

from cifar import augment, augmix, corruptions


def images(count=6, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(i, (5, 5), 1.5) for i in rng.integers(0, 256, (count, 32, 32, 3), np.uint8)])


def augmix_batch(images, index, seed, epoch, config, start=0):
    """AugMix on a uint8 batch, eagerly (tests and the preview): image i takes `draws`' row index[i]."""
    drawn = augmix.draws(int(index.max()) + 1, seed, epoch, config, images.shape[1])
    rows = index[start:start + len(images)]
    return augmix.mix(images, *(drawn[key][rows] for key in ("ops", "amounts", "weights", "skip"))).numpy()


SETTINGS = {"severity": 3, "width": 3, "depth": 0, "alpha": 1.0}


def test_the_training_operations_are_disjoint_from_the_corruptions_measured():
    assert not set(augmix.OPERATIONS) & set(corruptions.CORRUPTIONS)
    # AugMix's own rule: the operations that overlap the corruptions are left out, each named.
    assert not set(augmix.OPERATIONS) & set(augmix.EXCLUDED)
    assert {"contrast", "brightness", "color", "sharpness"} == set(augmix.EXCLUDED)
    assert "contrast" in corruptions.CORRUPTIONS and "saturate" in corruptions.CORRUPTIONS


def one(name, amount, x):
    """Operation `name` with parameter `amount` on every image of `x`, through augmix.mix (one
    chain of one step, the mix weight 1)."""
    n = len(x)
    return augmix.mix(x, np.full((n, 1, 1), augmix.CODE[name], np.int32), np.full((n, 1, 1), amount, np.float32),
                      np.ones((n, 1), np.float32), np.ones(n, np.float32)).numpy()


def pillow(name, amount, image):
    """What AugMix's reference code (its augmentations.py, on PIL) makes of one image."""
    from PIL import Image, ImageOps

    im = Image.fromarray(image)
    affine = {"shear_x": (1, amount, 0, 0, 1, 0), "shear_y": (1, 0, 0, amount, 1, 0),
              "translate_x": (1, 0, amount, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, amount)}
    if name in affine:
        return np.asarray(im.transform(im.size, Image.AFFINE, affine[name], resample=Image.BILINEAR))
    return np.asarray({
        "autocontrast": lambda: ImageOps.autocontrast(im), "equalize": lambda: ImageOps.equalize(im),
        "posterize": lambda: ImageOps.posterize(im, int(amount)), "solarize": lambda: ImageOps.solarize(im, int(amount)),
        "rotate": lambda: im.rotate(amount, resample=Image.BILINEAR)}[name]())


@pytest.mark.parametrize("name, amount", [
    ("autocontrast", 0), ("equalize", 0), ("posterize", 2), ("solarize", 100), ("rotate", 17), ("rotate", -9),
    ("shear_x", 0.2), ("shear_y", -0.15), ("translate_x", 7), ("translate_y", -5)])
def test_each_operation_is_augmixs_pil_operation(name, amount):
    x = images(8)
    x[0] = x[0] // 2 + 40  # a low-contrast image, for autocontrast and equalize to stretch
    ours = one(name, amount, x).astype(int)
    theirs = np.stack([pillow(name, amount, image) for image in x]).astype(int)
    assert ours.dtype == np.int64 and not np.array_equal(ours, x)
    # the same up to rounding: bilinear sampling rounds its 0-255 results its own way
    assert np.abs(ours - theirs).max() <= 1 and np.mean(ours != theirs) < (0.5 if name in ("rotate", "shear_x", "shear_y") else 0.01)


def test_the_draws_have_augmixs_distribution():
    config = dict(SETTINGS)
    drawn = augmix.draws(30_000, seed=1, epoch=0, config=config, side=32)
    ops, amounts = drawn["ops"], drawn["amounts"]
    assert ops.shape == (30_000, 3, 3) and drawn["weights"].shape == (30_000, 3) and drawn["skip"].shape == (30_000,)
    depth = (ops != augmix.NONE).sum(axis=2)
    assert set(np.unique(depth)) == {1, 2, 3} and np.allclose(np.bincount(depth.ravel())[1:] / depth.size, 1 / 3, atol=0.01)
    assert ((ops != augmix.NONE).argmin(axis=2)[depth < 3] == depth[depth < 3]).all()  # the operations come first
    used = ops[ops != augmix.NONE]
    assert np.allclose(np.bincount(used, minlength=9) / used.size, 1 / 9, atol=0.01)  # each operation alike
    assert np.allclose(drawn["weights"].sum(axis=1), 1, atol=1e-5) and abs(drawn["weights"].mean() - 1 / 3) < 0.01
    assert 0 < drawn["skip"].min() and drawn["skip"].max() < 1 and abs(drawn["skip"].mean() - 0.5) < 0.01
    by = {name: amounts[ops == augmix.CODE[name]] for name in augmix.OPERATIONS}
    # AugMix's levels: U(0.1, severity) of 10, as int_parameter / float_parameter of each maximum
    assert set(np.unique(by["posterize"])) == {3, 4} and set(np.unique(by["solarize"])) <= set(range(180, 255))
    assert np.abs(by["rotate"]).max() == 8 and set(np.unique(np.abs(by["translate_x"]))) == {0, 1, 2, 3}
    assert 0.25 < np.mean(by["shear_y"] > 0) * 2 < 1.75 and np.abs(by["shear_x"]).max() <= 0.09
    assert not by["autocontrast"].any() and not by["equalize"].any()
    config["depth"] = 2
    assert (augmix.draws(100, 1, 0, config, 32)["ops"] != augmix.NONE).all()


def test_an_images_draws_depend_on_seed_epoch_and_image_only():
    few, many = augmix.draws(10, 4, 2, SETTINGS, 32), augmix.draws(3000, 4, 2, SETTINGS, 32)
    assert all(np.array_equal(few[key], many[key][:10]) for key in few)  # not on how many images there are
    assert not np.array_equal(many["ops"], augmix.draws(3000, 4, 3, SETTINGS, 32)["ops"])  # another epoch
    assert not np.array_equal(many["skip"][:1024], many["skip"][1024:2048])  # blocks differ


def test_a_batchs_mix_depends_on_seed_epoch_and_image_only():
    x = images(8)
    index = np.arange(100, 108)
    whole = augmix_batch(x, index, seed=7, epoch=2, config=SETTINGS)
    halves = np.concatenate([augmix_batch(x[:3], index, 7, 2, SETTINGS, start=0),
                             augmix_batch(x[3:], index, 7, 2, SETTINGS, start=3)])
    assert np.array_equal(whole, halves)  # a split batch (replicas) gets the same draws
    assert not np.array_equal(whole, augmix_batch(x, index, 7, 3, SETTINGS))  # another epoch
    assert np.array_equal(whole, augmix_batch(x, index, 7, 2, SETTINGS))
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
    # What the graph makes of a batch is cifar.augmix's mix of its flipped and shifted images.
    index = augment.epoch_order(16, 3, 0)[:8]
    expected = augmix_batch(augment.flip_translate_batch(x[index], index, 3, 0, 2), index, 3, 0, SETTINGS)
    assert np.array_equal(first, expected)
    # Resumed at epoch 1, the stream repeats an uninterrupted one's batches from there.
    whole = [b[0].numpy() for b in augment.train_dataset(x, y, 8, 3, config, epochs=2)]
    resumed = [b[0].numpy() for b in augment.train_dataset(x, y, 8, 3, config, epochs=2, first_epoch=1)]
    assert len(whole) == 4 and all(np.array_equal(a, b) for a, b in zip(whole[2:], resumed, strict=True))
