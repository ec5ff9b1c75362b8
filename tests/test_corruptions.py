"""The corruptions of the robustness stage (cifar/corruptions.py, after CIFAR-10-C) behave as specified."""

import numpy as np
import pytest

from cifar import corruptions


def gray(n=64, level=128):
    return np.full((n, 32, 32, 3), level, np.uint8)


def photos(n=16, seed=0):
    """Smooth, photo-like images: low-frequency colour fields (noise images would hide blurs)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([cv2.resize(image, (32, 32), interpolation=cv2.INTER_CUBIC) for image in small])


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_gaussian_noise_has_the_stated_standard_deviation(severity):
    out = corruptions.corrupt(gray(), "gaussian_noise", severity, seed=1)
    noise = (out.astype(float) - 128) / 255
    assert noise.mean() == pytest.approx(0, abs=0.002)
    assert noise.std() == pytest.approx(corruptions.GAUSSIAN_NOISE[severity - 1], rel=0.03)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_shot_noise_is_poisson_with_the_stated_photon_count(severity):
    photons = corruptions.SHOT_NOISE[severity - 1]
    out = corruptions.corrupt(gray(), "shot_noise", severity, seed=1).astype(float) / 255
    level = 128 / 255
    assert out.mean() == pytest.approx(level, abs=0.004)
    assert out.std() == pytest.approx(np.sqrt(level * photons) / photons, rel=0.05)


def test_jpeg_at_quality_100_is_near_identical_and_the_severities_lose_more():
    x = photos()
    best = np.abs(corruptions.jpeg_at_quality(x, 100).astype(int) - x).mean()
    assert best < 2.5  # of 255: chroma subsampling of saturated colours is all that is left
    errors = [np.abs(corruptions.corrupt(x, "jpeg", s, 0).astype(int) - x).mean() for s in corruptions.SEVERITIES]
    assert errors == sorted(errors) and errors[0] > best


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur", "pixelate", "contrast"])
def test_a_flat_image_is_left_flat_by_smoothing_corruptions(name):
    for severity in corruptions.SEVERITIES:
        np.testing.assert_array_equal(corruptions.corrupt(gray(4), name, severity, 0), gray(4))


@pytest.mark.parametrize("name", ["gaussian_blur", "pixelate"])
def test_blurs_grow_with_severity(name):
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[:, ::2] = 255  # stripes: the finest detail there is
    detail = [np.abs(np.diff(corruptions.corrupt(x, name, s, 0).astype(int), axis=1)).mean()
              for s in corruptions.SEVERITIES]
    assert detail[0] < 255 and detail == sorted(detail, reverse=True)


def test_motion_blur_kernel_is_a_one_sided_line_summing_to_one_that_lengthens_with_severity():
    kernel = corruptions.motion_kernel(6, 2.0, 0.0)
    assert kernel.shape == (13, 13) and kernel.sum() == pytest.approx(1.0)
    assert kernel[6, 6:].sum() == pytest.approx(1.0) and kernel[6, 6] == kernel.max()  # along +x only
    spread = []
    for radius, sigma in corruptions.MOTION_BLUR:
        k = corruptions.motion_kernel(radius, sigma, 30.0)
        ys, xs = np.indices(k.shape) - radius
        spread.append(float((k * (xs**2 + ys**2)).sum()))
    assert spread == sorted(spread) and spread[0] > 0


def test_contrast_keeps_each_image_mean_and_scales_its_spread():
    x = photos()
    out = corruptions.corrupt(x, "contrast", 3, 0).astype(float)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=0.6)
    assert out.std() / x.astype(float).std() == pytest.approx(corruptions.CONTRAST[2], rel=0.05)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_brightness_raises_and_darken_lowers_the_value_by_the_stated_amount(severity):
    amount = corruptions.BRIGHTNESS[severity - 1] * 255
    assert corruptions.corrupt(gray(2), "brightness", severity, 0).mean() == pytest.approx(128 + amount, abs=1)
    assert corruptions.corrupt(gray(2), "darken", severity, 0).mean() == pytest.approx(128 - amount, abs=1)


def test_fog_is_a_low_frequency_veil_that_thickens_with_severity():
    x = photos()
    field = corruptions.plasma_fractal(np.random.default_rng(0), 32, 3.0)
    assert field.shape == (32, 32) and field.min() == 0 and field.max() == 1
    contrast = [corruptions.corrupt(x, "fog", s, 0).astype(float).std() for s in corruptions.SEVERITIES]
    assert contrast == sorted(contrast, reverse=True)


def test_corruptions_are_a_function_of_the_seed():
    x = photos()
    for name in corruptions.CORRUPTIONS:
        a, b = corruptions.corrupt(x, name, 3, 7), corruptions.corrupt(x, name, 3, 7)
        assert a.dtype == np.uint8 and a.shape == x.shape
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, x), name
    assert not np.array_equal(corruptions.corrupt(x, "gaussian_noise", 3, 7), corruptions.corrupt(x, "gaussian_noise", 3, 8))


def test_unknown_corruptions_and_severities_are_refused():
    with pytest.raises(ValueError, match="unknown corruption 'spatter'"):
        corruptions.corrupt(gray(1), "spatter", 1, 0)
    with pytest.raises(ValueError, match="severity must be one of"):
        corruptions.corrupt(gray(1), "fog", 6, 0)


def smooth_images(count=8, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(image, (7, 7), 2) for image in rng.integers(0, 256, (count, 32, 32, 3), np.uint8)])


def test_zoom_blur_leaves_the_centre_and_smears_the_edges_more_with_severity():
    x = smooth_images()
    diffs = [np.abs(corruptions.corrupt(x, "zoom_blur", s, 0).astype(float) - x).mean() for s in corruptions.SEVERITIES]
    assert diffs == sorted(diffs) and diffs[0] > 0.5
    flat = np.full((2, 32, 32, 3), 77, np.uint8)
    assert np.abs(corruptions.corrupt(flat, "zoom_blur", 5, 0).astype(int) - 77).max() <= 1


def test_snow_and_frost_brighten_and_saturate_scales_the_saturation():
    x = smooth_images()
    for name in ("snow", "frost"):
        for severity in corruptions.SEVERITIES:
            assert corruptions.corrupt(x, name, severity, 0).mean() > x.mean(), (name, severity)
    grey = np.full((1, 32, 32, 3), 128, np.uint8)
    assert np.array_equal(corruptions.corrupt(grey, "saturate", 2, 0), grey)  # no saturation to scale
    colour = np.zeros((1, 32, 32, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 100  # HSV saturation 0.5
    dull, vivid = (corruptions.corrupt(colour, "saturate", s, 0)[0, 0, 0].astype(int) for s in (2, 5))
    assert dull[0] - dull[1] < 20 and vivid[1] == vivid[2] < 10 and vivid[0] == 200  # 0.5*0.1 and min(1, 0.5*2.5+0.2)


def test_frost_is_a_pale_blue_white_layer_blended_with_the_published_weights():
    layer = corruptions.frost_layer(np.random.default_rng(0))
    assert layer.shape == (32, 32, 3) and 0 <= layer.min() and layer.max() <= 1
    assert (layer[..., 2] >= layer[..., 0]).all() and 0.45 < layer.mean() < 0.8
    black = np.zeros((1, 32, 32, 3), np.uint8)
    for severity, (_, weight) in zip(corruptions.SEVERITIES, corruptions.FROST):
        frosted = corruptions.corrupt(black, "frost", severity, 3)[0] / 255.0
        assert frosted.max() <= weight + 1 / 255 and frosted[..., 2].mean() > 0.3 * weight


def test_elastic_transform_moves_pixels_without_changing_their_range():
    x = smooth_images()
    moved = corruptions.corrupt(x, "elastic_transform", 4, 0)
    assert np.abs(moved.astype(float) - x).mean() > 1 and moved.min() >= x.min() - 1 and moved.max() <= x.max() + 1
    flat = np.full((2, 32, 32, 3), 200, np.uint8)
    assert np.abs(corruptions.corrupt(flat, "elastic_transform", 5, 0).astype(int) - 200).max() <= 1


def test_the_suite_has_cifar_10_cs_fifteen_and_keeps_the_original_ten():
    import yaml

    from conftest import REPO

    listed = yaml.safe_load((REPO / "params.yaml").read_text())["robustness"]["corruptions"]
    assert len(listed) == 15 and set(listed) == set(corruptions.CORRUPTIONS)
    assert set(corruptions.ORIGINAL_TEN) <= set(listed) and len(corruptions.ORIGINAL_TEN) == 10


def test_the_batched_filters_compute_what_opencv_and_scipy_compute_per_image():
    """motion blur and snow correlate a batch with one kernel per image (cv2.filter2D's result,
    BORDER_REPLICATE), zoom blur and snow zoom a batch with two matrix products (SciPy's order-1
    zoom, CIFAR-10-C's): the same numbers, to float32 rounding."""
    import cv2
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    kernels = np.stack([corruptions.motion_kernel(9, 2.5, angle) for angle in (-45, -10, 20, 44)])
    expected = np.stack([cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REPLICATE) for image, k in zip(x, kernels)])
    np.testing.assert_allclose(corruptions.correlate(x, kernels), expected, atol=1e-5)
    grey = x[..., 0]
    expected = np.stack([cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REPLICATE) for image, k in zip(grey, kernels)])
    np.testing.assert_allclose(corruptions.correlate(grey, kernels), expected, atol=1e-5)
    for factor in (1.0, 1.07, 1.25, 1.75, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = [zoom(image[top:top + crop, top:top + crop], (factor, factor, 1), order=1) for image in x]
        trim = (zoomed[0].shape[0] - 32) // 2
        expected = np.stack([z[trim:trim + 32, trim:trim + 32] for z in zoomed])
        np.testing.assert_allclose(corruptions.clipped_zoom(x, factor), expected, atol=1e-5)


def test_the_robustness_interval_takes_the_images_as_the_sample():
    """Two images, one right under every set and one under none: the mean is 50% whatever the
    number of sets, and its interval is that of two images, not of 2 x 75 draws."""
    import robustness

    hits = np.array([[1] * 75, [0] * 75], float)
    assert robustness.interval_pp(hits) == pytest.approx(1.96 * np.std([1, 0], ddof=1) / np.sqrt(2) * 100)
    mixed = np.tile([1.0, 0.0], (200, 1))  # every image right on half the sets: no spread over images
    assert robustness.interval_pp(mixed) == 0.0 and robustness.interval_pp(hits[:1]) is None
