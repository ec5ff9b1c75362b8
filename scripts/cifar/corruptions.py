"""Common corruptions of images at severities 1-5, after CIFAR-10-C (Hendrycks & Dietterich, ICLR
2019): each takes a uint8 batch (N, side, side, 3), a severity and a numpy Generator, and returns
uint8. Severity parameters are those of CIFAR-10-C's make_cifar_c.py for 32 px images. Where it
used a tool we do not depend on, the same operation is written with NumPy, OpenCV and SciPy:
scikit-image's Gaussian filter and HSV round trip as OpenCV's; ImageMagick's motion blur as
`motion_kernel` applied by `correlate`; SciPy's order-1 zoom as matrix products (`clipped_zoom`).
JPEG and pixelate use Pillow as CIFAR-10-C does. `frost` is a stand-in: CIFAR-10-C's frost
photographs are not redistributable, so the frost is drawn (a plasma fractal with crystal grain)
and blended with the published weights. `darken` is ours, brightness lowered by the amounts
brightness raises it. Every draw comes from the Generator: a corrupted set is a function of its seed."""

from __future__ import annotations

import io

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
BATCH = 256  # images corrupted at once by the batched corruptions (zoom_blur, snow)

GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)       # std of the noise, on the [0, 1] scale
SHOT_NOISE = (500, 250, 100, 75, 50)                  # photons at full intensity (Poisson)
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)             # sigma, px
MOTION_BLUR = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))  # (radius px, sigma px)
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)              # side of the downscaled image / 32
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)              # added to HSV value, on [0, 1]
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)                # deviations from the image mean scaled by this
FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))  # (strength, wibble decay)
ZOOM_BLUR = (1.06, 1.11, 1.16, 1.21, 1.26)            # zoom factors 1, 1.01, ... below this are averaged
FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # (image weight, frost weight)
SNOW = (  # (mean, std of the flakes, zoom, threshold, motion blur radius, its sigma, image weight)
    (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8))
ELASTIC = (  # (displacement scale, its smoothing sigma, affine jitter), px, for 32 px images
    (0.0, 0.0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92), (3.2, 1.28, 1.6), (3.2, 0.96, 0.96))
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))  # HSV saturation * a + b


def _unit(images):
    return images.astype(np.float32) / 255.0


def _to_uint8(x):
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def gaussian_noise(images, severity, rng):
    x = _unit(images)
    return _to_uint8(x + rng.normal(0.0, GAUSSIAN_NOISE[severity - 1], x.shape))


def shot_noise(images, severity, rng):
    photons = SHOT_NOISE[severity - 1]
    return _to_uint8(rng.poisson(_unit(images) * photons) / photons)


def gaussian_blur(images, severity, rng):
    sigma = GAUSSIAN_BLUR[severity - 1]
    size = 2 * int(4 * sigma + 0.5) + 1
    out = [cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REPLICATE) for image in _unit(images)]
    return _to_uint8(np.stack(out)) if out else images.copy()


def motion_kernel(radius, sigma, angle_degrees):
    """ImageMagick's motion blur kernel: taps 0..radius along `angle`, one side, weighted
    exp(-d^2 / 2 sigma^2), summed to 1, bilinearly splatted into a square."""
    side = 2 * radius + 1
    kernel = np.zeros((side, side), np.float64)
    theta = np.deg2rad(angle_degrees)
    for d in range(radius + 1):
        weight = np.exp(-d * d / (2.0 * sigma * sigma))
        x, y = radius + d * np.cos(theta), radius + d * np.sin(theta)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < side and 0 <= x0 + dx < side:
                    kernel[y0 + dy, x0 + dx] += weight * wy * wx
    return (kernel / kernel.sum()).astype(np.float32)


def correlate(images, kernels):
    """Each image (N, H, W[, C]) correlated with its own kernel (N, k, k), edges replicated, as
    cv2.filter2D(BORDER_REPLICATE): shifted copies weighted over the taps any kernel uses, the batch
    at once (filter2D takes a DFT for kernels this large, which costs milliseconds per image)."""
    radius = kernels.shape[1] // 2
    pad = [(0, 0), (radius, radius), (radius, radius)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad, mode="edge")
    side_h, side_w = images.shape[1:3]
    out = np.zeros(images.shape, np.float32)
    for dy, dx in zip(*np.nonzero(np.any(kernels, axis=0))):
        weight = kernels[:, dy, dx].reshape(-1, *[1] * (images.ndim - 1))
        out += weight * padded[:, dy:dy + side_h, dx:dx + side_w]
    return out


def motion_blur(images, severity, rng):
    radius, sigma = MOTION_BLUR[severity - 1]
    angles = rng.uniform(-45, 45, len(images))
    if not len(images):
        return images.copy()
    return _to_uint8(correlate(_unit(images), np.stack([motion_kernel(radius, sigma, a) for a in angles])))


def jpeg(images, severity, rng):
    return jpeg_at_quality(images, JPEG_QUALITY[severity - 1])


def jpeg_at_quality(images, quality):
    """Each image encoded as a JPEG of `quality` (Pillow, as CIFAR-10-C) and decoded again."""
    from PIL import Image

    out = np.empty_like(images)
    for image, target in zip(images, out):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        target[...] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


def pixelate(images, severity, rng):
    from PIL import Image

    side = images.shape[1]
    small = int(side * PIXELATE[severity - 1])
    out = np.empty_like(images)
    for image, target in zip(images, out):
        down = Image.fromarray(image).resize((small, small), Image.Resampling.BOX)
        target[...] = np.asarray(down.resize((side, side), Image.Resampling.BOX))
    return out


def _hsv(images, channel, scale, offset):
    """HSV `channel` (1: S, 2: V) * scale + offset, in OpenCV's float HSV (S and V in [0, 1])."""
    out = np.empty_like(images)
    for image, target in zip(_unit(images), out):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., channel] = np.clip(hsv[..., channel] * scale + offset, 0, 1)
        target[...] = _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    return out


def brightness(images, severity, rng):
    return _hsv(images, 2, 1.0, BRIGHTNESS[severity - 1])


def darken(images, severity, rng):
    return _hsv(images, 2, 1.0, -BRIGHTNESS[severity - 1])


def contrast(images, severity, rng):
    x = _unit(images)
    means = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - means) * CONTRAST[severity - 1] + means)


def fractal_side(side):
    """The plasma map's side: CIFAR-10-C's 32, or the power of two covering a larger image."""
    return max(32, 1 << (int(side) - 1).bit_length())


def plasma_fractal(rng, mapsize=32, wibbledecay=3.0):
    """CIFAR-10-C's diamond-square height map: (mapsize, mapsize) floats in [0, 1]."""
    field = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        corners = field[0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        field[step // 2:mapsize:step, step // 2:mapsize:step] = wibbled_mean(square)
        dr = field[step // 2:mapsize:step, step // 2:mapsize:step]
        ul = field[0:mapsize:step, 0:mapsize:step]
        field[0:mapsize:step, step // 2:mapsize:step] = wibbled_mean(
            dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
        field[step // 2:mapsize:step, 0:mapsize:step] = wibbled_mean(
            dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= wibbledecay
    field -= field.min()
    return field / field.max()


def fog(images, severity, rng):
    strength, decay = FOG[severity - 1]
    x = _unit(images)
    side = images.shape[1]
    out = np.empty_like(images)
    for image, target in zip(x, out):
        top = image.max()
        foggy = image + strength * plasma_fractal(rng, fractal_side(side), decay)[:side, :side, None]
        target[...] = _to_uint8(foggy * top / (top + strength))
    return out


def zoom_matrix(crop, factor):
    """(out, crop) matrix of SciPy's order-1 zoom along one axis (grid_mode False)."""
    out = int(round(crop * factor))
    coords = np.arange(out) * ((crop - 1) / (out - 1)) if out > 1 else np.zeros(1)
    low = np.minimum(np.floor(coords).astype(int), crop - 1)
    high, frac = np.minimum(low + 1, crop - 1), coords - low
    matrix = np.zeros((out, crop))
    np.add.at(matrix, (np.arange(out), low), 1 - frac)
    np.add.at(matrix, (np.arange(out), high), frac)
    return matrix


def clipped_zoom(images, factor):
    """The centre of each image (N, H, W, C) zoomed by `factor` back to its size, the batch at once."""
    side = images.shape[1]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    matrix = zoom_matrix(crop, factor).astype(np.float32)
    zoomed = np.einsum("oh,nhwc,pw->nopc", matrix, images[:, top:top + crop, top:top + crop], matrix, optimize=True)
    trim = (zoomed.shape[1] - side) // 2
    return zoomed[:, trim:trim + side, trim:trim + side]


def zoom_blur(images, severity, rng):
    factors = np.arange(1, ZOOM_BLUR[severity - 1], 0.01)
    out = np.empty_like(images)
    for start in range(0, len(images), BATCH):  # in batches: a few copies of the batch in float32 at a time
        x = _unit(images[start:start + BATCH])
        out[start:start + BATCH] = _to_uint8((x + sum(clipped_zoom(x, f) for f in factors)) / (len(factors) + 1))
    return out


def frost_layer(rng, side=32):
    """The frost stand-in (side, side, 3) in [0, 1]: pale blue-white ice with crystal grain."""
    from scipy.ndimage import gaussian_filter

    rough = plasma_fractal(rng, fractal_side(side), 1.4)[:side, :side]
    grain = gaussian_filter(rng.uniform(0, 1, (side, side)), 0.7, mode="reflect")
    grain = (grain - grain.min()) / (np.ptp(grain) or 1.0)
    ice = np.clip(0.35 + 0.45 * rough + 0.35 * grain, 0, 1)
    return ice[..., None] * np.array([0.84, 0.93, 1.0], np.float32)


def frost(images, severity, rng):
    image_weight, frost_weight = FROST[severity - 1]
    side = images.shape[1]
    out = np.empty_like(images)
    for image, target in zip(_unit(images), out):
        target[...] = _to_uint8(image_weight * image + frost_weight * frost_layer(rng, side))
    return out


def snow(images, severity, rng):
    mean, std, factor, threshold, radius, sigma, weight = SNOW[severity - 1]
    side = images.shape[1]
    out = np.empty_like(images)
    for start in range(0, len(images), BATCH):
        x = _unit(images[start:start + BATCH])
        noise, angles = [], []
        for _ in range(len(x)):  # the draws in CIFAR-10-C's order: each image's flakes, then its wind
            noise.append(rng.normal(mean, std, (side, side, 1)))
            angles.append(rng.uniform(-135, -45))
        flakes = clipped_zoom(np.stack(noise), factor)[..., 0]
        flakes[flakes < threshold] = 0
        flakes = np.rint(np.clip(flakes, 0, 1) * 255) / 255  # CIFAR-10-C passes the layer through an 8-bit PNG
        flakes = correlate(flakes.astype(np.float32), np.stack([motion_kernel(radius, sigma, a) for a in angles]))[..., None]
        grey = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]  # cv2's RGB2GRAY weights
        whitened = weight * x + (1 - weight) * np.maximum(x, grey * 1.5 + 0.5)
        out[start:start + BATCH] = _to_uint8(whitened + flakes + np.rot90(flakes, k=2, axes=(1, 2)))
    return out


def elastic_transform(images, severity, rng):
    from scipy.ndimage import gaussian_filter, map_coordinates

    scale, smoothing, jitter = ELASTIC[severity - 1]
    side = images.shape[1]
    centre, square = np.float32([side, side]) // 2, side // 3
    source = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    out = np.empty_like(images)
    for image, target in zip(_unit(images), out):
        affine = cv2.getAffineTransform(source, source + rng.uniform(-jitter, jitter, source.shape).astype(np.float32))
        image = cv2.warpAffine(image, affine, (side, side), borderMode=cv2.BORDER_REFLECT_101)
        dx, dy = (gaussian_filter(rng.uniform(-1, 1, (side, side)), smoothing, mode="reflect", truncate=3) * scale
                  for _ in range(2))
        warped = [map_coordinates(image[..., c], [rows + dy, cols + dx], order=1, mode="reflect")
                  for c in range(image.shape[2])]
        target[...] = _to_uint8(np.stack(warped, axis=-1))
    return out


def saturate(images, severity, rng):
    return _hsv(images, 1, *SATURATE[severity - 1])


# By name, in a fixed order: a corruption's index here seeds its draws.
CORRUPTIONS = {f.__name__: f for f in (gaussian_noise, shot_noise, gaussian_blur, motion_blur, jpeg, pixelate, brightness,
                                       darken, contrast, fog, zoom_blur, snow, frost, elastic_transform, saturate)}
# The suite before these five were added: its mean is kept beside the 15-corruption one.
ORIGINAL_TEN = ("gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur", "jpeg", "pixelate", "brightness",
                "darken", "contrast", "fog")


def corrupt(images, name, severity, seed):
    """`images` (uint8 NHWC) with corruption `name` at `severity`, drawn from (seed, name, severity)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    key = list(CORRUPTIONS).index(name)
    rng = np.random.default_rng([seed, key, severity])
    return CORRUPTIONS[name](images, severity, rng)
