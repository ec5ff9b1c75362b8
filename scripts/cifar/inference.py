"""Running any exported model the same way, and turning image files into model input.

`load(path)` opens a `.keras` file, a SavedModel folder or a `.tflite` file and returns a
predictor: `predict(images)` takes uint8 RGB images (N, 32, 32, 3), raw 0-255, and returns
float32 class probabilities (N, classes). `read_image(path)` reads any image OpenCV reads and
returns the 32x32 RGB uint8 the models take, with notes on every conversion it made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import cifar
from cifar.data import CLASS_NAMES, SIDE

# Images with more pixels are refused from their header, before decoding: 40 megapixels is
# more than a phone camera's photo, and decodes to 120 MB at 8 bits (240 MB at 16). The package
# also caps OpenCV's decoder at it (cifar.OPENCV_MAX_PIXELS), as a second line.
MAX_PIXELS = cifar.OPENCV_MAX_PIXELS


from cifar.models import ModelError  # noqa: E402  (one error type for a model that cannot be loaded)


class ImageError(ValueError):
    """A file that is not a readable image."""


class KerasPredictor:
    kind = "keras"

    def __init__(self, path=None, level=0, model=None):
        """The .keras file `path` with test-time augmentation at `level`, or a Keras `model` as it is."""
        from cifar import models

        self.model = model if model is not None else models.load(path, level)

    def predict(self, images):
        return np.asarray(self.model.predict_on_batch(images.astype(np.float32)), np.float32)


class SavedModelPredictor:
    kind = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self.model = tf.saved_model.load(str(path))
        if not hasattr(self.model, "serve"):
            raise ModelError(f"{path}: this SavedModel has no `serve` endpoint; export it with scripts/export.py (Keras' ExportArchive)")

    def predict(self, images):
        out = self.model.serve(self._tf.constant(images.astype(np.float32)))
        # {"probabilities": ...} (cifar.export.saved_model); a plain model.export() returns the tensor
        return (out["probabilities"] if isinstance(out, dict) else out).numpy()


class TFLitePredictor:
    """ai_edge_litert's Interpreter; quantized (uint8/int8) input and output are converted."""

    kind = "tflite"

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = str(path)
        self.threads = threads or os.cpu_count()
        self.interpreter = Interpreter(model_path=self.path, num_threads=self.threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    @property
    def input_type(self):
        return np.dtype(self.input["dtype"]).name

    @property
    def output_type(self):
        return np.dtype(self.output["dtype"]).name

    def _quantize(self, images):
        dtype = np.dtype(self.input["dtype"])
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        if (scale, zero) == (1.0, 0) and dtype == np.uint8:
            return images.astype(np.uint8)
        return np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, values):
        if np.dtype(self.output["dtype"]) == np.float32:
            return values.astype(np.float32)
        scale, zero = self.output["quantization"]
        return ((values.astype(np.float32) - zero) * scale).astype(np.float32)

    def predict(self, images):
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], [len(images), *images.shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self.input["index"], self._quantize(images))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"]))


def load(path, tta=0):
    """A predictor for a .keras file (run with test-time augmentation at level `tta`, as its
    registry entry says), a SavedModel folder or a .tflite file; ModelError for anything else, a
    corrupt file included. The exported formats hold their test-time augmentation already."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(f"{path}: a folder without saved_model.pb is not a SavedModel")
        kind, make = "SavedModel", SavedModelPredictor
    elif path.suffix == ".tflite":
        kind, make = "TF-Lite model", TFLitePredictor
    elif path.suffix == ".keras":
        kind, make = "Keras model", KerasPredictor
    else:
        raise ModelError(f"{path}: unknown model type; expected a .keras file, a SavedModel folder or a .tflite file")
    try:
        return make(path, tta) if make is KerasPredictor else make(path)
    except ModelError:
        raise
    except Exception as err:  # protobuf, zip, h5, flatbuffer and deserialisation errors all mean this
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ModelError(f"{path}: not a readable {kind} ({type(err).__name__}: {first})") from None


def most_accurate(metrics="reports/metrics/evaluate.json"):
    """(name, test accuracy) of the registry model with the highest test accuracy, as the
    evaluate stage measured it; ModelError if there is no such measurement yet."""
    path = Path(metrics)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ModelError(f"{path} not found or unreadable: no model has been evaluated yet; run "
                         "`dvc repro evaluate` (or `make repro`), or give --model") from None
    scored = {k: v["test"]["accuracy"] for k, v in results.items() if isinstance(v, dict) and "test" in v}
    if not scored:
        raise ModelError(f"{path} holds no model's test accuracy; run `dvc repro evaluate`, or give --model")
    best = max(scored, key=scored.get)
    return best, scored[best]


def class_names(model_path):
    """Class names from the metadata.json the export stage writes beside its artifacts, if any;
    ModelError for one that is corrupt or from an older export."""
    path = Path(model_path)
    for folder in (path, *path.parents[:2]):  # a SavedModel folder, the export folder, its parent
        meta = folder / "metadata.json"
        if meta.is_file():
            try:
                names = json.loads(meta.read_text())["classes"]
                if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                    raise TypeError("'classes' is not a list of names")
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
                raise ModelError(f"{meta} is not an export's metadata ({type(err).__name__}: {err}); it is written "
                                 "by the export stage: rerun it with `dvc repro --force --glob 'export@*'`") from None
            return tuple(names)
    return CLASS_NAMES


def check_takes_images(predictor, path, classes):
    """ModelError unless `predictor` takes (N, 32, 32, 3) images and gives one probability per
    class: a model that loads but was made for other input fails here, not on the first image."""
    try:
        out = np.asarray(predictor.predict(np.zeros((1, SIDE, SIDE, 3), np.uint8)))
    except Exception as err:  # shape errors differ by runtime: Keras, TF, LiteRT
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelError(f"{path}: loads, but does not take 32x32 RGB images ({type(err).__name__}: {first}); "
                         "this project's models take (N, 32, 32, 3) raw 0-255 RGB") from None
    if out.shape != (1, classes):
        raise ModelError(f"{path}: gives output of shape {out.shape[1:]} for one image, not {classes} class "
                         "probabilities; it is not a CIFAR-10 classifier of this project")


def predict_batches(predictor, images, batch_size):
    """Probabilities for every image, in batches; also the seconds it took."""
    start = time.perf_counter()
    parts = [predictor.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts), time.perf_counter() - start


def latency_ms(predictor, images, runs):
    """Median wall time of `runs` single-image predictions, after one warm-up, in ms."""
    predictor.predict(images[:1])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        predictor.predict(images[i % len(images):i % len(images) + 1])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def image_header(path):
    """(width, height, format, EXIF orientation 1-8) read from the file's header, without
    decoding any pixels: by Pillow, or for Radiance HDR (which Pillow cannot parse) by
    `radiance_size`; None for a format neither reads."""
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
    """(width, height) from a Radiance .hdr header ("#?RADIANCE", settings, a blank line, then
    e.g. "-Y 480 +X 640"), or None if the file is not one."""
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
    """Turn a decoded image (uint8 RGB) upright as EXIF `orientation` says, as browsers do:
    Pillow's `ImageOps.exif_transpose`, given the orientation the header held (the pixels were
    decoded by OpenCV, which keeps 16-bit and float formats Pillow does not)."""
    from PIL import Image, ImageOps

    upright = Image.fromarray(image)
    upright.getexif()[0x0112] = orientation  # the EXIF Orientation tag
    return np.asarray(ImageOps.exif_transpose(upright))


def read_image(path, max_pixels=None):
    """Read an image file as the models take it: (32, 32, 3) uint8 RGB.

    Returns (pixels, notes): notes say what was converted (bit depth, channels, orientation,
    size). The width and height are read from the header first: an image of more than
    `max_pixels` (MAX_PIXELS) is refused before anything is decoded. An EXIF orientation is
    applied as browsers apply it. Any size is accepted: the largest centred square is cropped,
    then resized to 32x32 with pixel-area averaging (cv2.INTER_AREA) when shrinking, bilinear
    when enlarging. No full-size float64 copy is made: 16-bit and float images go to 8-bit
    in one OpenCV pass.

    Long on purpose: one bounded decoder, each step a guard in the order the bytes allow it
    (existence, header size, decode, bit depth, channels, orientation, size); split up, a caller
    could run one step without the guards before it.
    """
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
    if (height, width) != (SIDE, SIDE):
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = np.ascontiguousarray(image[top:top + side, left:left + side])
        interpolation = cv2.INTER_AREA if side > SIDE else cv2.INTER_LINEAR
        image = cv2.resize(image, (SIDE, SIDE), interpolation=interpolation)
        cropped = f"centre {side}x{side} cropped, " if side != max(height, width) else ""
        notes.append(f"{width}x{height} {cropped}resized to {SIDE}x{SIDE}")
    return np.ascontiguousarray(image), notes


NODE_SCRIPT = Path(__file__).resolve().parent / "tfjs_predict.mjs"


TFJS_TIMED_IMAGES = 512  # images the throughput is timed on, in one Node.js process on its own


def run_tfjs(model_json, x, batch_size, latency_runs, processes=None):
    """A TF.js model (model.json) on the images `x` in Node.js, on the WASM backend
    (tfjs_predict.mjs, beside this module): (probabilities, timing and runtime).

    The WASM backend runs on one thread in Node.js. The single-image latency and the batch
    throughput are timed in one process on its own (on the first TFJS_TIMED_IMAGES images), as a
    user's one page would run; the other images are then split between `processes` processes
    (default: one per CPU core this process may use) running at once, untimed, which only
    shortens the wall time of the check."""
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node not found: the TF.js parity check runs in Node.js; install Node.js 18+ and run `make setup`")
    processes = processes or len(os.sched_getaffinity(0))
    timed = min(len(x), TFJS_TIMED_IMAGES)
    rest = np.array_split(np.arange(timed, len(x)), processes) if len(x) > timed else []
    shards = [(slice(0, timed), latency_runs)] + [(slice(int(i[0]), int(i[-1]) + 1), 0) for i in rest if len(i)]
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:

        def start(number, shard, runs):
            images, probs = Path(tmp) / f"x{number}.u8", Path(tmp) / f"p{number}.f32"
            np.ascontiguousarray(x[shard], dtype=np.uint8).tofile(images)
            command = [node, str(NODE_SCRIPT), "--model", str(model_json), "--images", str(images),
                       "--count", str(shard.stop - shard.start), "--out", str(probs), "--batch", str(batch_size),
                       "--latency-runs", str(runs)]
            return probs, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish(probs, proc):
            out, err = proc.communicate()
            if proc.returncode != 0:
                tail = "\n".join(err.strip().splitlines()[-10:])
                hint = " (run `make setup` to install the npm packages)" if "Cannot find" in err else ""
                raise RuntimeError(f"TF.js in Node.js failed on {model_json}{hint}:\n{tail}")
            return json.loads(out.strip().splitlines()[-1]), np.fromfile(probs, np.float32)

        timing, first = finish(*start(0, *shards[0]))  # alone: its timings are one process's
        running = [start(number, *shard) for number, shard in enumerate(shards[1:], 1)]
        parts = [first] + [finish(*proc)[1] for proc in running]
        probabilities = np.concatenate(parts).reshape(len(x), -1)
    return probabilities, {"latency_ms": timing["latency_ms"], "throughput_img_s": timing["throughput_img_s"],
                           "runtime": f"tfjs {timing['tfjs']}, {timing['backend']} backend in Node.js, "
                                      f"{timing['threads']} thread(s)"}
