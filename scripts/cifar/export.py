"""Turning a trained Keras model into the formats it ships in: SavedModel, TF-Lite, TF.js.

Every format takes raw RGB pixels, 0-255, NHWC, side x side; the scaling is inside the graph. The
int8 TF-Lite file's tensors are quantized (metadata.json records their scale and zero point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typing import Callable, NamedTuple

import numpy as np

from cifar import evaluation
from cifar.tflite import (ExportError, calibration_sample, choose_int8, describe, int8_candidates, structural_floor,
                          tflite, tflite_bytes_by_part)

TFJS_QUANTIZATION = ("none", "float16", "uint8")
# Largest |difference| in probabilities tolerated between a float conversion and Keras.
FLOAT_TOLERANCE = 1e-4


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


SIGNATURE_INPUT, SIGNATURE_OUTPUT = "image", "probabilities"
INPUT_CONVENTION = "RGB pixels 0-255, NHWC; scaling is inside every model"


def saved_model(model, out_dir, check_images, classes=None):
    """The SavedModel of `model` (Keras' ExportArchive), reloaded and checked against it: endpoint
    `serve` (also `serving_default`) from `image` to `probabilities` (a dict names its output),
    and with `classes`, the endpoint `classes` that returns their names in output order."""
    import tensorflow as tf
    from keras.export import ExportArchive

    signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=SIGNATURE_INPUT)]
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda image: {SIGNATURE_OUTPUT: model(image, training=False)},
                         input_signature=signature)
    if classes is not None:
        names = tf.constant([str(c) for c in classes])
        archive.add_endpoint("classes", lambda: {"classes": names}, input_signature=[])
    archive.write_out(str(out_dir), verbose=False)
    reloaded = tf.saved_model.load(str(out_dir))
    x = check_images.astype(np.float32)
    diff = max_diff(reloaded.serve(tf.constant(x))[SIGNATURE_OUTPUT].numpy(), evaluation.predict(model, x))
    if diff > FLOAT_TOLERANCE:
        raise ExportError(f"the reloaded SavedModel {out_dir} differs from the Keras model by {diff:.2e}")
    return diff


def fold_batchnorm_after_activation(model):
    """An equal-in-float copy of a Sequential model whose BatchNormalizations after an activation
    are 1x1 DepthwiseConv2Ds with the same per-channel scale and offset, and how many.

    TF-Lite does not fold BN across a ReLU (the seed's Conv-ReLU-BN): it becomes a MUL by one
    per-tensor-quantized constant, where a channel scale 500x below the largest rounds to zero in
    int8; a depthwise kernel is quantized per channel. Other models come back as they are."""
    import keras

    if not isinstance(model, keras.Sequential):
        return model, 0
    layers = model.layers
    replace = {
        id(layer) for previous, layer in zip(layers, layers[1:])
        if isinstance(layer, keras.layers.BatchNormalization)
        and getattr(previous, "activation", None) not in (None, keras.activations.linear)
        and layer.axis in (-1, 3)  # channels last, as DepthwiseConv2D computes
    }
    if not replace:
        return model, 0

    def clone(layer):
        if id(layer) in replace:
            return keras.layers.DepthwiseConv2D(1, use_bias=True, name=f"{layer.name}_folded")
        return layer.__class__.from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, folded.layers):
        if id(old) in replace:
            gamma = np.asarray(old.gamma) if old.scale else np.ones(old.moving_variance.shape)
            beta = np.asarray(old.beta) if old.center else np.zeros(old.moving_mean.shape)
            scale = gamma / np.sqrt(np.asarray(old.moving_variance) + old.epsilon)
            offset = beta - scale * np.asarray(old.moving_mean)
            new.set_weights([scale.reshape(1, 1, -1, 1), offset])
        else:
            new.set_weights(old.get_weights())
    return folded, len(replace)


def calibrated_model(model, temperature):
    """The model with softmax(logits / T) (the val-fitted temperature): its final softmax becomes the
    same logits, a Rescaling by 1/T and a softmax, which every format runs. A Sequential model
    stays Sequential (int8's BN folding applies); the arg max is unchanged."""
    import keras

    last = model.layers[-1]
    softmax = keras.activations.softmax
    tail = [keras.layers.Rescaling(1.0 / temperature, name="temperature"),
            keras.layers.Activation("softmax", name="calibrated_probabilities")]
    if isinstance(last, keras.layers.Dense) and last.activation is softmax:
        logits = keras.layers.Dense(last.units, use_bias=last.use_bias, name="logits_before_temperature")
        head = [logits, *tail]
        body = model.layers[:-1]
    elif isinstance(last, keras.layers.Activation) and last.activation is softmax:
        logits, head, body = None, tail, model.layers[:-1]
    else:
        raise ExportError(f"{model.name}: its last layer ({last.name}, {type(last).__name__}) is not a softmax; "
                          "a temperature can only rescale the logits of a softmax output")
    if isinstance(model, keras.Sequential):
        scaled = keras.Sequential([keras.Input(model.input_shape[1:], name="image"), *body, *head], name=model.name)
    else:
        x = last.input
        for layer in head:
            x = layer(x)
        scaled = keras.Model(model.inputs, x, name=model.name)
    if logits is not None:
        logits.set_weights(last.get_weights())
    return scaled


def shipped(model, tta_level=0, temperature=None):
    """What every artifact holds, and parity's Keras reference: `model` at `temperature` (None: as
    trained) in test-time augmentation at `tta_level` (cifar.tta)."""
    from cifar import tta

    return tta.wrap(calibrated_model(model, temperature) if temperature else model, tta_level)


def calibrated(model, arrays):
    """`model` with the temperature fitted on the val split inside it, and that fit's numbers."""
    y_val = arrays["y_val"]
    probabilities = evaluation.predict(model, arrays["x_val"])
    temperature = evaluation.fit_temperature(probabilities, y_val)
    return calibrated_model(model, temperature), {
        "temperature": temperature, "fitted_on": "val split",
        "val_nll": evaluation.negative_log_likelihood(probabilities, y_val),
        "val_nll_temperature_scaled": evaluation.negative_log_likelihood(
            evaluation.temperature_scaled(probabilities, temperature), y_val),
    }


def tfjs(saved_model_dir, out_dir, quantization="none", metadata=None):
    """tensorflowjs_converter: SavedModel -> TF.js graph model, `metadata` in model.json's
    `userDefinedMetadata.classification`."""
    if quantization not in TFJS_QUANTIZATION:
        raise ValueError(f"unknown TF.js quantization {quantization!r}; expected one of {', '.join(TFJS_QUANTIZATION)}")
    command = [sys.executable, "-m", "tensorflowjs.converters.converter",
               "--input_format=tf_saved_model", "--output_format=tfjs_graph_model",
               "--signature_name=serving_default", "--saved_model_tags=serve"]
    if quantization != "none":
        command.append(f"--quantize_{quantization}=*")
    if metadata is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        metadata_file = Path(out_dir).parent / "tfjs_metadata.json"
        metadata_file.write_text(json.dumps(metadata))
        command.append(f"--metadata=classification:{metadata_file}")
    command += [str(saved_model_dir), str(out_dir)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if metadata is not None:
        metadata_file.unlink()
    if proc.returncode != 0 or not (Path(out_dir) / "model.json").is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ExportError(f"tensorflowjs_converter failed on {saved_model_dir} (exit {proc.returncode}):\n{tail}")
    return json.loads((Path(out_dir) / "model.json").read_text())


def size_of(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- The formats table: what the export stage makes and how the parity stage checks it. -------


def _write_tflite(path, payload):
    from cifar import inference

    path.write_bytes(payload)
    interpreter = inference.TFLitePredictor(path, threads=1)  # loads: the bytes are a valid model
    return {"file": path.name, "bytes": len(payload), "bytes_by_part": tflite_bytes_by_part(path),
            "input": describe(interpreter.input), "output": describe(interpreter.output)}


def _make_saved_model(job):
    diff = saved_model(job.model, job.out / "saved_model", job.check, job.arrays["class_names"])
    print(f"{job.name}: SavedModel reloaded; max |difference| from Keras {diff:.1e}")
    return {"file": "saved_model", "bytes": size_of(job.out / "saved_model"),
            "input": {"dtype": "float32", "shape": [-1, *job.model.input_shape[1:]]},
            "output": {"dtype": "float32", "shape": [-1, job.model.output_shape[-1]]}}


def _make_tflite(kind):
    def make(job):
        return _write_tflite(job.out / f"{job.name}_{kind}.tflite", tflite(job.out / "saved_model", kind))

    return make


def _make_tflite_plain(job):
    """For a model that ships test-time augmentation, the float32 TF-Lite file of it without: the
    accuracy a user who needs speed gives up, and the latency gained, measured beside the others."""
    if job.plain is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="plain-", dir=job.out) as tmp:
        saved_model(job.plain, Path(tmp) / "saved_model", job.check)
        return _write_tflite(job.out / f"{job.name}_float32_plain.tflite", tflite(Path(tmp) / "saved_model", "float32"))


def _make_tflite_int8(job):
    """int8 of the BN-folded copy (fold_batchnorm_after_activation), calibrated on seeded training
    images; the file shipped is chosen among int8_candidates on val (choose_int8), never test,
    against the float32 TF-Lite file it stands in for, in the same runtime."""
    import tempfile

    folded, count = fold_batchnorm_after_activation(job.model)
    calibration = calibration_sample(job.arrays["x_train"], job.cfg["int8_calibration_images"], job.cfg["seed"])
    val_x = job.arrays["x_val"][:job.cfg["int8_selection_images"] or None]
    val_y = job.arrays["y_val"][:len(val_x)]
    with tempfile.TemporaryDirectory(prefix="int8-", dir=job.out) as tmp:
        source = job.out / "saved_model"
        if count:
            x = job.check.astype(np.float32)
            diff = max_diff(evaluation.predict(folded, x), evaluation.predict(job.model, x))
            if diff > FLOAT_TOLERANCE:
                raise ExportError(f"{job.name}: folding BatchNormalization changed the output by {diff:.2e}")
            source = Path(tmp) / "saved_model"
            saved_model(folded, source, job.check)
            print(f"{job.name}: {count} BatchNormalization layer(s) after an activation folded into "
                  f"per-channel depthwise convolutions for int8 (max |difference| {diff:.1e})")

        def accuracy_in(path):
            from cifar import inference

            probabilities, _ = inference.predict_batches(inference.TFLitePredictor(path), val_x, 256)
            return float(np.mean(probabilities.argmax(1) == val_y))

        def accuracy_of(payload):
            path = Path(tmp) / "candidate.tflite"
            path.write_bytes(payload)
            return accuracy_in(path)

        float_accuracy = accuracy_in(job.out / f"{job.name}_float32.tflite")
        candidates = int8_candidates(source, calibration, job.cfg["int8_float_layers"])
        payload, chosen = choose_int8(candidates, accuracy_of, float_accuracy, INT8_ACCURACY_DROP_PP)
    for t in chosen["candidates"]:
        print(f"{job.name}: int8 candidate {t['candidate']:<14} val accuracy {t['val_accuracy'] * 100:6.2f}% "
              f"({-t['drop_pp']:+.2f} pp against float, {len(val_x):,} val images)")
    print(f"{job.name}: int8 ships {chosen['candidate']}: {chosen['why']}")
    return {**_write_tflite(job.out / f"{job.name}_int8.tflite", payload), "calibration_images": len(calibration),
            **chosen, "selection": {"split": "val", "images": int(len(val_x)), "float_accuracy": float_accuracy}}


def _make_tfjs(job):
    quantization = job.cfg["tfjs_quantization"]
    metadata = {"labels": [str(c) for c in job.arrays["class_names"]], "input": INPUT_CONVENTION}
    model_json = tfjs(job.out / "saved_model", job.out / "tfjs", quantization, metadata)
    return {"file": "tfjs/model.json", "bytes": size_of(job.out / "tfjs"), "quantization": quantization,
            "input": {"dtype": "float32", "shape": [-1, *job.model.input_shape[1:]]},
            "converted_by": model_json.get("convertedBy"),
            # A quantized TF.js model's weights differ from the float ones: no float target.
            "target": "float" if quantization == "none" else "none"}


class Format(NamedTuple):
    """One artifact kind: `make(job)` writes it and returns its metadata entry; parity runs it in
    `runtime` and holds it to `target`: "float" (agreement >= FLOAT_AGREEMENT), "int8" (size and
    accuracy drop, against `size_reference`) or "none"; `label` and `runs_in` name it in the
    artifacts table; `sampled`: parity may check it on a stratified sample (parity.tfjs_sample)."""
    key: str
    make: Callable
    runtime: str
    target: str
    label: str
    runs_in: str
    integer_only: bool = False
    size_reference: str = None
    sampled: bool = False


# The order is the order of work: every later format converts the SavedModel.
FORMATS = (
    Format("saved_model", _make_saved_model, "tensorflow", "float", "SavedModel", "TensorFlow"),
    Format("tflite_float32", _make_tflite("float32"), "tflite", "float", "TF-Lite float32", "LiteRT"),
    Format("tflite_float32_plain", _make_tflite_plain, "tflite", "none", "TF-Lite float32, no test-time augmentation",
           "LiteRT"),
    Format("tflite_dynamic_range", _make_tflite("dynamic_range"), "tflite", "none", "TF-Lite dynamic range", "LiteRT"),
    Format("tflite_int8", _make_tflite_int8, "tflite", "int8", "TF-Lite int8", "LiteRT", integer_only=True,
           size_reference="tflite_float32"),
    Format("tfjs", _make_tfjs, "node", "float", "TF.js", "TF.js WASM in Node.js", sampled=True),
)
FORMATS_BY_KEY = {f.key: f for f in FORMATS}
# The reference every artifact is compared with (parity's `keras` row); not an export.
KERAS = Format("keras", None, "tensorflow", "reference", "Keras `.keras`", "TensorFlow")
from cifar.targets import (  # noqa: E402,F401  (defined once)
    FLOAT_AGREEMENT, INT8_ACCURACY_DROP_PP, INT8_FLOOR_MARGIN, INT8_SIZE_RATIO)


class ExportJob:
    """What every format's `make` reads: model, name, arrays, export settings (and seed), folder, and
    the model without its test-time augmentation (`plain`; None when it ships none)."""

    def __init__(self, name, model, arrays, cfg, out, plain=None):
        self.name, self.model, self.arrays, self.cfg, self.out, self.plain = name, model, arrays, cfg, Path(out), plain
        self.check = arrays["x_test"][:64] if len(arrays["x_test"]) else arrays["x_train"][:64]


# MediaPipe's metadata writer runs in its own environment (requirements-mediapipe.txt says why).
MEDIAPIPE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-mediapipe" / "bin" / "python"


def mediapipe_command(command):
    """scripts/tools/mediapipe_tasks.py's `command`, in MediaPipe's environment."""
    python = Path(os.environ.get("MEDIAPIPE_PYTHON", MEDIAPIPE_PYTHON))
    if not python.is_file():
        raise ExportError(f"{python} not found: the TF-Lite metadata and MediaPipe's check run in MediaPipe's own "
                          "environment. Run `make setup` (or set MEDIAPIPE_PYTHON to a Python that has "
                          "requirements-mediapipe.txt installed)")
    return [str(python), str(Path(__file__).resolve().parents[1] / "tools" / "mediapipe_tasks.py"), command]


def add_tflite_metadata(out, artifacts, name, description, version):
    """Every .tflite of `artifacts` (in `out`, beside labels.txt) rewritten with TF-Lite metadata
    (input convention, labels, name, description, version) by mediapipe_tasks.py; their entries
    get the new size, hash and `bytes_by_part.metadata`."""
    from cifar.outputs import sha256_of

    files = {key: out / a["file"] for key, a in artifacts.items() if a["file"].endswith(".tflite")}
    subprocess.run([*mediapipe_command("describe"), "--name", name, "--version", version, "--description", description,
                    "--labels", str(out / "labels.txt"), *map(str, files.values())], check=True)
    for key, path in files.items():
        entry = artifacts[key]
        added = path.stat().st_size - entry["bytes"]
        parts = tflite_bytes_by_part(path)
        parts.update(metadata=added, other=parts["other"] - added)
        entry.update(bytes=path.stat().st_size, sha256=sha256_of(path), bytes_by_part=parts)


def export_all(name, model, arrays, cfg, out, plain=None):
    """Every format of FORMATS (a `make` that returns None has nothing to make), written into the
    empty folder `out`; their metadata."""
    from cifar.outputs import sha256_of

    job = ExportJob(name, model, arrays, cfg, out, plain)
    artifacts = {}
    for fmt in FORMATS:
        made = fmt.make(job)
        if made is None:
            continue
        artifact = {"target": fmt.target, **made}
        if (job.out / artifact["file"]).is_file():
            artifact["sha256"] = sha256_of(job.out / artifact["file"])
        artifacts[fmt.key] = artifact
        print(f"{name}: {fmt.key:<20} {artifact['bytes'] / 1e6:8.2f} MB  {artifact['file']}")
    return artifacts


def targets(results, artifacts):
    """Which targets the parity `results` meet, from each artifact's `target` in metadata.json."""
    floats = [k for k, a in artifacts.items() if a.get("target") == "float" and k in results]
    int8 = [k for k, a in artifacts.items() if a.get("target") == "int8" and k in results]
    summary = {}
    if floats:
        worst = min(floats, key=lambda k: results[k]["agreement"])
        summary.update(float_agreement_min=results[worst]["agreement"], float_agreement_worst=worst,
                       float_agreement_met=results[worst]["agreement"] >= FLOAT_AGREEMENT)
    for key in int8:
        reference = FORMATS_BY_KEY[key].size_reference
        ratio = results[key]["bytes"] / results[reference]["bytes"]
        floor = structural_floor(artifacts[key])
        floor_ratio = floor / results[reference]["bytes"] if floor else None
        drop = (results["keras"]["accuracy"] - results[key]["accuracy"]) * 100
        summary.update(int8_size_ratio=ratio, int8_floor_ratio=floor_ratio,
                       int8_size_met=ratio <= INT8_SIZE_RATIO or (
                           floor_ratio is not None and ratio - floor_ratio <= INT8_FLOOR_MARGIN),
                       int8_accuracy_drop_pp=drop, int8_accuracy_met=drop <= INT8_ACCURACY_DROP_PP)
    checked = [r["mediapipe"] for r in results.values() if "mediapipe" in r]
    if checked:  # every .tflite loads in MediaPipe, names its classes and picks LiteRT's top class
        summary["mediapipe_met"] = all(c["top1_agreement"] == 1 and c["names"] for c in checked)
    return summary
