"""Image files into model input: one bounded decoder for the predict command and the prepare stage.
It imports no model code, so the prepare stage does not depend on it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import cifar
from cifar.data import SIDE

# Images with more pixels are refused from their header, before decoding: 40 megapixels is
# more than a phone camera's photo, and decodes to 120 MB at 8 bits (240 MB at 16). The package
# also caps OpenCV's decoder at it (cifar.OPENCV_MAX_PIXELS), as a second line.
MAX_PIXELS = cifar.OPENCV_MAX_PIXELS


class ImageError(ValueError):
    """A file that is not a readable image."""


def image_header(path):
    """(width, height, format, EXIF orientation) from the header, no pixels decoded (Pillow, or
    `radiance_size` for Radiance HDR); None for a format neither reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = 1
            # These formats keep EXIF in the header; reading it does not decode the pixels.
            if image.format in ("JPEG", "MPO", "TIFF", "WEBP"):
                orientation = int(image.getexif().get(0x0112, 1) or 1)
            return width, height, image.format, orientation if 1 <= orientation <= 8 else 1
    except Image.DecompressionBombError as err:
        # Over twice Pillow's own limit (default 179 megapixels), read from the header: Pillow
        # refuses it before returning the size, which its message gives.
        counts = [int(n) for n in re.findall(r"\d+", str(err))]
        said = f"{counts[0]:,} pixels" if counts else str(err)
        raise ImageError(f"image too large: {said} by its header, more than Pillow opens "
                         f"({Image.MAX_IMAGE_PIXELS * 2:,}); scale it down first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass
    size = radiance_size(path)
    return (*size, "HDR", 1) if size else None


def radiance_size(path):
    """(width, height) from a Radiance .hdr header, or None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return None
    _, blank, rest = head.partition(b"\n\n")
    match = re.match(rb"([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\s", rest) if blank else None
    if not match or match.group(2) == match.group(5):
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (second, first) if match.group(2) == b"Y" else (first, second)


def orient(image, orientation):
    """The decoded image turned upright as EXIF `orientation` says (Pillow's exif_transpose)."""
    from PIL import Image, ImageOps

    upright = Image.fromarray(image)
    upright.getexif()[0x0112] = orientation  # the EXIF Orientation tag
    return np.asarray(ImageOps.exif_transpose(upright))


def resize_square(image, side):
    """A square image at `side` px: area averaging when shrinking, bilinear when enlarging."""
    import cv2

    if image.shape[0] == side:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(image, (side, side), interpolation=interpolation)


def read_image(path, max_pixels=None, side=SIDE):
    """(side, side, 3) uint8 RGB from an image file, and notes on every conversion made.

    The header is read first: more than `max_pixels` is refused before decoding. 16-bit and float go
    to 8-bit in one OpenCV pass, EXIF orientation is applied, the centred square is resized to
    side. Long on purpose: each guard in the order the bytes allow it, none skippable by a caller."""
    import cv2

    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    path = Path(path)
    if not path.exists():
        raise ImageError("no such file")
    if path.is_dir():
        raise ImageError("is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError("empty file (0 bytes)")
    header = image_header(path)
    if header is None:
        # OpenCV would decode such a file whole before any size check could run.
        raise ImageError("not a readable image: its size cannot be read from its header (not a format Pillow "
                         "parses, nor Radiance HDR), so it is not decoded; convert it to PNG, JPEG or TIFF")
    width, height, kind, orientation = header
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} {kind} is {width * height:,} pixels, "
                         f"over the limit of {max_pixels:,}; scale it down first")
    # OpenCV's own cap (OPENCV_IO_MAX_IMAGE_PIXELS, set when the package is imported) backs this up.
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"OpenCV could not decode it ({err.msg if hasattr(err, 'msg') else err})") from None
    if image is None or image.size == 0:
        raise ImageError("not an image OpenCV can read (unknown format or corrupt data)")
    notes = []
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)  # rounds to nearest: 257 * v -> v
        notes.append("16-bit converted to 8-bit")
    elif image.dtype in (np.float32, np.float64):
        peak = 1.0 if float(np.nanmax(image)) <= 1.0 else 255.0
        np.nan_to_num(image, copy=False, nan=0.0, posinf=peak, neginf=0.0)
        np.clip(image, 0, peak, out=image)  # in place: convertScaleAbs would mirror negatives
        image = cv2.convertScaleAbs(image, alpha=255.0 / peak)
        notes.append(f"floating-point ({'0-1' if peak == 1.0 else '0-255'}) converted to 8-bit")
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        notes.append("grayscale converted to RGB")
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        # On white: (rgb * a + 255 * (255 - a)) / 255, rounded, in 16-bit integers.
        alpha = image[..., 3:4].astype(np.uint16)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB).astype(np.uint16)
        rgb *= alpha
        rgb += 255 * (255 - alpha) + 127
        image = (rgb // 255).astype(np.uint8)
        notes.append("RGBA converted to RGB (composited on white)")
    else:
        raise ImageError(f"unsupported channel count {channels}")
    if orientation != 1:
        image = orient(image, orientation)
        notes.append(f"EXIF orientation {orientation} applied")
    height, width = image.shape[:2]
    if (height, width) != (side, side):
        square = min(height, width)
        top, left = (height - square) // 2, (width - square) // 2
        image = np.ascontiguousarray(image[top:top + square, left:left + square])
        image = resize_square(image, side)
        cropped = f"centre {square}x{square} cropped, " if square != max(height, width) else ""
        notes.append(f"{width}x{height} {cropped}resized to {side}x{side}")
    return np.ascontiguousarray(image), notes
