"""Running any exported model the same way: `load(path)` opens a `.keras` file, a SavedModel
folder or a `.tflite` file as a predictor whose `predict(images)` takes uint8 RGB (N, side,
side, 3), raw 0-255, and returns float32 probabilities (N, classes). The image-file decoder is
cifar.decode's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import cifar  # noqa: F401  (first: it quiets TensorFlow's start-up lines)
from cifar.models import ModelError  # one error type for a model that cannot be loaded


class KerasPredictor:
    kind = "keras"

    def __init__(self, path=None, level=0, model=None):
        """The .keras file `path` with test-time augmentation at `level`, or a Keras `model` as it is."""
        from cifar import models

        self.model = model if model is not None else models.load(path, level)

    @property
    def side(self):
        """The side of the square images it takes, px."""
        return int(self.model.input_shape[1])

    def predict(self, images):
        from cifar import evaluation

        return evaluation.predict(self.model, images, batch_size=max(len(images), 1))


class SavedModelPredictor:
    kind = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self.model = tf.saved_model.load(str(path))
        if not hasattr(self.model, "serve"):
            raise ModelError(f"{path}: this SavedModel has no `serve` endpoint; export it with scripts/export.py (Keras' ExportArchive)")

    @property
    def side(self):
        """The side of the square images its `serve` signature takes, px."""
        return int(self.model.serve.input_signature[0].shape[1])

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
    def side(self):
        """The side of the square images it takes, px."""
        return int(self.input["shape"][1])

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
    """A predictor for a .keras file (with test-time augmentation at `tta`), a SavedModel folder or a
    .tflite file; ModelError for anything else, a corrupt file included."""
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


NODE_SCRIPT = Path(__file__).resolve().parent / "tfjs_predict.mjs"


TFJS_TIMED_IMAGES = 512  # images the throughput is timed on, in one Node.js process on its own


def run_tfjs(model_json, x, batch_size, latency_runs, processes=None):
    """A TF.js model on `x` in Node.js, WASM backend (tfjs_predict.mjs): (probabilities, timing).

    Latency and throughput are timed in one process on its own (the first TFJS_TIMED_IMAGES
    images), as one page runs; the other images are split between `processes` processes (default:
    one per usable core), untimed, which only shortens the check."""
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
                       "--count", str(shard.stop - shard.start), "--out", str(probs), "--side", str(x.shape[1]),
                       "--batch", str(batch_size), "--latency-runs", str(runs)]
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
