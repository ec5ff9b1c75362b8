"""Running any exported model the same way, and turning image files into model input.

`load(path)` opens a `.keras` file, a SavedModel folder or a `.tflite` file and returns a
predictor: `predict(images)` takes uint8 RGB images (N, 32, 32, 3), raw 0-255, and returns
float32 class probabilities (N, classes). `read_image(path)` reads any image OpenCV reads and
returns the 32x32 RGB uint8 the models take, with notes on every conversion it made.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

SIDE = 32
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


class ModelError(ValueError):
    """A path that is not a model this module can run."""


class ImageError(ValueError):
    """A file that is not a readable image."""


class KerasPredictor:
    kind = "keras"

    def __init__(self, path):
        import keras

        self.model = keras.saving.load_model(path, compile=False)

    def predict(self, images):
        return np.asarray(self.model.predict_on_batch(images.astype(np.float32)), np.float32)


class SavedModelPredictor:
    kind = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self.model = tf.saved_model.load(str(path))
        if not hasattr(self.model, "serve"):
            raise ModelError(f"{path}: this SavedModel has no `serve` endpoint; export it with Keras' model.export()")

    def predict(self, images):
        return self.model.serve(self._tf.constant(images.astype(np.float32))).numpy()


class TFLitePredictor:
    """ai_edge_litert's Interpreter; quantized (uint8/int8) input and output are converted."""

    kind = "tflite"

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = str(path)
        self.threads = threads or os.cpu_count()
        try:
            self.interpreter = Interpreter(model_path=self.path, num_threads=self.threads)
        except ValueError as err:
            raise ModelError(f"{path}: not a readable TF-Lite model ({err})") from None
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


def load(path):
    """A predictor for a .keras file, a SavedModel folder or a .tflite file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(f"{path}: a folder without saved_model.pb is not a SavedModel")
        return SavedModelPredictor(path)
    if path.suffix == ".tflite":
        return TFLitePredictor(path)
    if path.suffix == ".keras":
        try:
            return KerasPredictor(path)
        except Exception as err:  # zip, h5 and deserialisation errors all mean the same here
            raise ModelError(f"{path}: not a readable Keras model ({type(err).__name__}: {err})") from None
    raise ModelError(f"{path}: unknown model type; expected a .keras file, a SavedModel folder or a .tflite file")


def class_names(model_path):
    """Class names from the metadata.json the export stage writes beside its artifacts, if any."""
    path = Path(model_path)
    for folder in (path, *path.parents[:2]):  # a SavedModel folder, the export folder, its parent
        meta = folder / "metadata.json"
        if meta.is_file():
            return tuple(json.loads(meta.read_text())["classes"])
    return CIFAR10_CLASSES


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


def read_image(path):
    """Read an image file as the models take it: (32, 32, 3) uint8 RGB.

    Returns (pixels, notes): notes say what was converted (bit depth, channels, size). Any size
    is accepted: the largest centred square is cropped, then resized to 32x32 with pixel-area
    averaging (cv2.INTER_AREA) when shrinking, bilinear when enlarging.
    """
    import cv2

    path = Path(path)
    if not path.exists():
        raise ImageError("no such file")
    if path.is_dir():
        raise ImageError("is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"OpenCV could not decode it ({err.msg if hasattr(err, 'msg') else err})") from None
    if image is None or image.size == 0:
        raise ImageError("not an image OpenCV can read (unknown format or corrupt data)")
    notes = []
    height, width = image.shape[:2]
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
        notes.append("16-bit converted to 8-bit")
    elif image.dtype in (np.float32, np.float64):
        peak = 1.0 if float(np.nanmax(image)) <= 1.0 else 255.0
        image = np.clip(np.nan_to_num(image) * (255.0 / peak), 0, 255).round().astype(np.uint8)
        notes.append(f"floating-point ({'0-1' if peak == 1.0 else '0-255'}) converted to 8-bit")
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        image = cv2.cvtColor(image.reshape(height, width), cv2.COLOR_GRAY2RGB)
        notes.append("grayscale converted to RGB")
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB).astype(np.float32)
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        notes.append("RGBA converted to RGB (composited on white)")
    else:
        raise ImageError(f"unsupported channel count {channels}")
    if (height, width) != (SIDE, SIDE):
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top:top + side, left:left + side]
        interpolation = cv2.INTER_AREA if side > SIDE else cv2.INTER_LINEAR
        image = cv2.resize(image, (SIDE, SIDE), interpolation=interpolation)
        cropped = f"centre {side}x{side} cropped, " if side != max(height, width) else ""
        notes.append(f"{width}x{height} {cropped}resized to {SIDE}x{SIDE}")
    return np.ascontiguousarray(image), notes
