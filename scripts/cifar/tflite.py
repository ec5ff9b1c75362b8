"""TF-Lite: conversion from a SavedModel, and the int8 file a model ships as.

For int8, `int8_candidates` lists the files the export tries, in order: integer-only; the
quantization debugger's worst layers in float. `choose_int8` ships the first within the accuracy
target on val, else the most accurate. (int16 activations are not a candidate: MediaPipe's
TF-Lite cannot prepare their QUANTIZE to int16; studies/int8/ measures them.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cifar.outputs import StageError


TFLITE_KINDS = ("float32", "dynamic_range", "int8")


class ExportError(StageError, RuntimeError):
    """A conversion failed or its result does not compute what the Keras model computes."""


CALIBRATION_BATCH = 50  # most images per calibration step (export@mobilenet: 16 ms an image, one at a time)


def representative(images, most=CALIBRATION_BATCH):
    """TF-Lite's representative dataset of `images`, in equal batches: the calibrator sizes its input
    once, from the first, so the batch is the largest of at most `most` that divides their count.
    The ranges it records are the ones image by image gives (the min and max of every activation)."""
    size = max(d for d in range(1, min(most, len(images)) + 1) if len(images) % d == 0)

    def generate():
        for i in range(0, len(images), size):
            yield [images[i:i + size].astype(np.float32)]

    return generate


# What the TF-Lite converter prints on every conversion, as C++ log lines: not news to a user.
CONVERTER_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|Ignored output_format|Ignored drop_control_dependency"
    r"|MLIR V1 optimization pass is not enabled|^fully_quantize: |^Estimated count of arithmetic ops"
)


def quiet_converter():
    """filtered_stderr for the converter's routine lines, unless CIFAR10_VERBOSE is set."""
    import contextlib
    import os

    import cifar

    if os.environ.get("CIFAR10_VERBOSE", "0") not in ("", "0"):
        return contextlib.nullcontext()
    return cifar.filtered_stderr(CONVERTER_NOISE)


def converter_for(saved_model_dir, kind, calibration_images=None, float_fallback=False):
    """The TF-Lite converter of a SavedModel for `kind` (TFLITE_KINDS): float32; dynamic_range (int8
    weights); int8 (calibrated on `calibration_images`, integer-only ops unless `float_fallback`,
    uint8 raw pixels in and uint8 probabilities x 256 out)."""
    import tensorflow as tf

    if kind not in TFLITE_KINDS:
        raise ValueError(f"unknown TF-Lite kind {kind!r}; expected one of {', '.join(TFLITE_KINDS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if kind == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "dynamic_range":
        return converter
    if calibration_images is None or not len(calibration_images):
        raise ValueError(f"{kind} conversion needs calibration images")
    converter.representative_dataset = representative(calibration_images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, *(
        [tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else [])]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter


def tflite(saved_model_dir, kind, calibration_images=None):
    """Convert a SavedModel to TF-Lite bytes (`converter_for`'s kinds)."""
    converter = converter_for(saved_model_dir, kind, calibration_images)
    try:
        with quiet_converter():
            return converter.convert()
    except Exception as err:  # the converter raises many types; all mean the same here
        raise ExportError(f"TF-Lite {kind} conversion of {saved_model_dir} failed: {err}") from err


def describe(detail):
    """A TF-Lite tensor's dtype, shape and quantization, for metadata.json."""
    scale, zero = detail["quantization"]
    out = {"dtype": np.dtype(detail["dtype"]).name, "shape": [int(d) for d in detail["shape_signature"]]}
    if scale:
        out["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return out


def tflite_bytes_by_part(path):
    """Where a .tflite file's bytes go (TF-Lite's flatbuffer_utils): constant data by dtype, the
    quantization parameters (a float32 scale and an int64 zero point per channel), the tensor names,
    and `other`, the flatbuffer's structure."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    data, quantization, names = {}, 0, 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            names += len(tensor.name or b"")
            buffer = model.buffers[tensor.buffer].data
            if buffer is not None and len(buffer):
                dtype = flatbuffer_utils.type_to_name(tensor.type).lower()
                data[dtype] = data.get(dtype, 0) + len(buffer)
            q = tensor.quantization
            if q is not None:
                quantization += 4 * len(q.scale if q.scale is not None else []) + 8 * len(
                    q.zeroPoint if q.zeroPoint is not None else [])
    total = Path(path).stat().st_size
    parts = {f"{dtype}_tensor_data": size for dtype, size in sorted(data.items())}
    parts.update(quantization_params=quantization, tensor_names=names)
    return {**parts, "other": total - sum(parts.values())}


def calibration_sample(x_train, count, seed):
    """`count` training images drawn at random with `seed`: the int8 calibration set."""
    rng = np.random.default_rng(seed)
    return x_train[rng.permutation(len(x_train))[:min(count, len(x_train))]]


def debugger_ranking(saved_model_dir, calibration, images):
    """[(tensor, op, rmse / scale)] worst first: the quantization debugger's per-layer error on
    `images`, in quantization steps (about 0.29 for rounding alone)."""
    import csv
    import io

    import tensorflow as tf

    converter = converter_for(saved_model_dir, "int8", calibration)
    converter.inference_input_type = tf.float32  # the debugger compares float activations
    converter.inference_output_type = tf.float32
    with quiet_converter():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative(images))
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    ranked = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"] or 0)
        if scale > 0:
            ranked.append((row["tensor_name"], row["op_name"], float(row["mean_squared_error"]) ** 0.5 / scale))
    return sorted(ranked, key=lambda r: -r[2])


def selective(saved_model_dir, calibration, images, denylisted_ops=(), denylisted_nodes=()):
    """int8 bytes with the named ops or nodes kept in float (the debugger's selective quantization)."""
    import tensorflow as tf

    converter = converter_for(saved_model_dir, "int8", calibration, float_fallback=True)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(denylisted_ops) or None, denylisted_nodes=list(denylisted_nodes) or None)
    try:
        with quiet_converter():
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative(images), debug_options=options)
            return debugger.get_nondebug_quantized_model()
    except Exception as err:  # the converter raises many types; all mean the same here
        raise ExportError(f"TF-Lite int8 conversion of {saved_model_dir} with layers in float failed: {err}") from err


def int8_candidates(source, calibration, float_layers):
    """[(name, integer-only, what it is, make() -> bytes)] in order of preference: integer-only; the
    quantization debugger's `float_layers` worst layers in float (its ranking made only then)."""
    found = [("integer_only", True, "every operation int8", lambda: tflite(source, "int8", calibration))]
    if float_layers:
        found.append((f"float_worst{float_layers}", False,
                      f"int8 with the quantization debugger's {float_layers} worst layer(s) in float",
                      lambda: selective(source, calibration, calibration[:DEBUG_IMAGES], denylisted_nodes=[
                          tensor for tensor, _, _ in debugger_ranking(source, calibration,
                                                                      calibration[:DEBUG_IMAGES])[:float_layers]])))
    return found


DEBUG_IMAGES = 200  # calibration images the quantization debugger compares float and int8 on


def choose_int8(candidates, accuracy_of, float_accuracy, drop_pp):
    """(bytes, record) of the first candidate within `drop_pp` of `float_accuracy` by `accuracy_of`
    (on val), else the most accurate; later candidates are not made. One LiteRT cannot run (seen
    for some int8 graphs at 64 px) is recorded and passed over; none that runs is a StageError."""
    from cifar.outputs import StageError

    tried, failed = [], []
    for name, integer_only, what, make in candidates:
        payload = make()
        try:
            accuracy = accuracy_of(payload)
        except (RuntimeError, ValueError) as err:  # LiteRT's allocate_tensors and invoke errors
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            print(f"int8: candidate {name} does not run in LiteRT ({first}); trying the next")
            failed.append({"candidate": name, "integer_only": integer_only, "what": what, "error": first})
            continue
        tried.append({"candidate": name, "integer_only": integer_only, "what": what, "bytes": len(payload),
                      "val_accuracy": accuracy, "drop_pp": (float_accuracy - accuracy) * 100, "payload": payload})
        if tried[-1]["drop_pp"] <= drop_pp:
            chosen, why = tried[-1], f"the first candidate within {drop_pp} pp of float on val"
            break
    else:
        if not tried:
            raise StageError("int8: no candidate runs in LiteRT: " + "; ".join(
                f"{f['candidate']}: {f['error']}" for f in failed) + "; set export.int8_float_layers to try another")
        chosen = max(tried, key=lambda t: t["val_accuracy"])
        why = f"no candidate within {drop_pp} pp of float on val: the most accurate"
    payload = chosen["payload"]
    for t in tried:
        del t["payload"]
    return payload, {"candidate": chosen["candidate"], "integer_only": chosen["integer_only"], "why": why,
                     "candidates": tried + failed}


def structural_floor(artifact):
    """The bytes an int8 file cannot do without (weights, biases, their scales and zero points); None
    without `bytes_by_part`."""
    parts = artifact.get("bytes_by_part")
    if not parts:
        return None
    return sum(parts.get(part, 0) for part in (  # int64: the biases of layers with int16 activations
        "int8_tensor_data", "int32_tensor_data", "int64_tensor_data", "quantization_params"))
