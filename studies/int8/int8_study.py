"""int8 study: what TF-Lite's post-training quantization options do to one trained model.

Usage: python studies/int8/int8_study.py --name mobilenet --model models/trained/mobilenet.keras \
           --data data/prepared/cifar10.npz --out studies/int8/mobilenet.json

Not a stage: a measurement behind the export stage's choice of int8 file (README: Where int8
falls short). It converts the model as `export@<model>` does (the temperature fitted on the val
split inside, BatchNormalization after an activation folded, 1,000 seeded training images to
calibrate) and then in every variant of VARIANTS, and runs each file in LiteRT on the val split
(`--split val`, the default: the export's choice is made there, so the study that informs it is
too; `--split test` for the one-off report):
accuracy, top-1 agreement with Keras, bytes against the float32 file, median single-image
latency, and how many operations compute in float (0: integer-only). It also ranks the layers by
the quantization debugger's error (RMSE over the quantization step, on the calibration images)
and keeps the worst in float in the `float_top<K>` variants.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/: the cifar package

import cifar  # noqa: F401  (first: it quiets TensorFlow's start-up lines)
import numpy as np

from cifar import data, evaluation, export, inference, models, outputs, params, tflite

TOP_K = (1, 3, 10)


def equalize_before_batchnorm(model):
    """An equal-in-float copy of a Sequential model in which each Conv2D-ReLU followed by a
    BatchNormalization has the BN's per-channel scale moved into the convolution (by its absolute
    value, which ReLU commutes with) and what is left, the sign and the offset, in a 1x1
    DepthwiseConv2D after it; and the number of such pairs (0: the model comes back as it is).

    The export's fold_batchnorm_after_activation keeps the BN's scale after the ReLU, so the
    ReLU's output, one int8 tensor with one scale for all channels, holds channels whose ranges
    differ as much as the BN's scales do (orders of magnitude): the small ones lose their
    resolution. Here every channel reaches the ReLU already scaled to the BN's output range."""
    import keras

    if not isinstance(model, keras.Sequential):
        return model, 0
    layers = model.layers
    pairs = {id(bn): conv for conv, bn in zip(layers, layers[1:])
             if isinstance(conv, keras.layers.Conv2D) and not isinstance(conv, keras.layers.DepthwiseConv2D)
             and conv.activation is keras.activations.relu and conv.use_bias
             and isinstance(bn, keras.layers.BatchNormalization) and bn.axis in (-1, 3)}
    if not pairs:
        return model, 0
    scaled_convs = {id(conv) for conv in pairs.values()}

    def clone(layer):
        if id(layer) in pairs:
            return keras.layers.DepthwiseConv2D(1, use_bias=True, name=f"{layer.name}_sign_offset")
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    factors = {}
    for old in layers:
        if id(old) in pairs:
            gamma = np.asarray(old.gamma) if old.scale else np.ones(old.moving_variance.shape)
            beta = np.asarray(old.beta) if old.center else np.zeros(old.moving_mean.shape)
            scale = gamma / np.sqrt(np.asarray(old.moving_variance) + old.epsilon)
            factors[id(pairs[id(old)])] = scale
            factors[id(old)] = (np.sign(scale), beta - scale * np.asarray(old.moving_mean))
    for old, new in zip(layers, copy.layers):
        if id(old) in scaled_convs:
            kernel, bias = (np.asarray(w) for w in old.get_weights())
            magnitude = np.abs(factors[id(old)])
            new.set_weights([kernel * magnitude, bias * magnitude])
        elif id(old) in pairs:
            sign, offset = factors[id(old)]
            new.set_weights([sign.reshape(1, 1, -1, 1), offset])
        else:
            new.set_weights(old.get_weights())
    return copy, len(pairs)


def converter_for(saved_model_dir, calibration, kind, denylisted_ops=(), denylisted_nodes=()):
    """The export's TF-Lite converter for `kind` (cifar.tflite.converter_for), with its
    calibration data (layers kept in float need float kernels allowed); and the study's own
    variants of int8: `int16x8` (int16 activations) and `per_tensor` (one scale per weight tensor)."""
    import tensorflow as tf

    if kind not in ("int16x8", "per_tensor"):
        return tflite.converter_for(saved_model_dir, kind, calibration,
                                    float_fallback=bool(denylisted_ops or denylisted_nodes))
    converter = tflite.converter_for(saved_model_dir, "int8", calibration)
    if kind == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int16
        return converter
    # No public option turns per-channel weights off; the study measures what they buy. A private
    # attribute: set only if the converter still has it (test_int8_study runs it).
    if not hasattr(converter, "_experimental_disable_per_channel"):
        raise RuntimeError("this TF-Lite converter no longer has _experimental_disable_per_channel: "
                           "the per_tensor variant cannot be made")
    converter._experimental_disable_per_channel = True
    return converter


# The export stage's own: its int8 fallback candidate keeps the debugger's worst layers in float.
debugger_ranking, selective = tflite.debugger_ranking, tflite.selective


def float_ops(path):
    """How many operations of a .tflite file read or write a float32 tensor (0: integer-only),
    leaving out the DEQUANTIZE of float16/int8 constants; and the op names that do."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    names = {}
    # LiteRT lists a file's operations through this method only (no public one); its test
    # (test_int8_study) fails if it goes, rather than counting nothing.
    for op in interpreter._get_ops_details():
        if any(tensors.get(i) == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0):
            names[op["op_name"]] = names.get(op["op_name"], 0) + 1
    return sum(names.values()), names


def measure(path, x, y, keras_top1, latency_runs):
    predictor = inference.TFLitePredictor(path)
    probabilities, seconds = inference.predict_batches(predictor, x, 256)
    top1 = probabilities.argmax(1)
    count, names = float_ops(path)
    return {"accuracy": float((top1 == y).mean()), "agreement": float((top1 == keras_top1).mean()),
            "bytes": path.stat().st_size, "latency_ms": inference.latency_ms(predictor, x, latency_runs),
            "throughput_img_s": len(x) / seconds, "float_ops": count, "float_op_kinds": names}


def main():
    """Every variant converted and measured in turn (long: one variant a few lines, in a row)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--split", choices=("val", "test"), default="val", help="the images each file runs on")
    parser.add_argument("--images", type=int, default=0, help="the first N images of the split (0: all)")
    parser.add_argument("--debug-images", type=int, default=200, help="calibration images the debugger compares on")
    parser.add_argument("--latency-runs", type=int, default=30)
    args = parser.parse_args()
    cfg = params.load(["shared", "export"])
    settings = cfg["export"]
    entry, _ = models.entry(args.name)
    arrays = data.load_prepared(args.data)
    model = models.load(args.model)
    x_test, y_test = arrays[f"x_{args.split}"], arrays[f"y_{args.split}"]
    if args.images:
        x_test, y_test = x_test[:args.images], y_test[:args.images]
    y_test = y_test.argmax(1) if y_test.ndim == 2 else y_test
    started = time.time()

    scaled, temperature = model, None
    if settings["temperature"] == "val":  # as the export stage does (scripts/export.py)
        _, fitted = export.calibrated(model, arrays)
        temperature = fitted["temperature"]
    scaled = export.shipped(model, entry["tta"], temperature)  # what the export ships
    folded, _ = export.fold_batchnorm_after_activation(scaled)
    keras_top1 = evaluation.predict(scaled, x_test).argmax(1)
    keras_accuracy = float((keras_top1 == y_test).mean())
    calibration = tflite.calibration_sample(arrays["x_train"], settings["int8_calibration_images"], cfg["shared"]["seed"])
    debug_images = calibration[:args.debug_images]

    results, ranking = {}, []
    with tempfile.TemporaryDirectory(prefix="int8-study-") as tmp:
        source = Path(tmp) / "saved_model"
        export.saved_model(folded, source, x_test[:64])

        def record(variant, payload, note):
            path = Path(tmp) / f"{variant}.tflite"
            path.write_bytes(payload)
            results[variant] = {"note": note, **measure(path, x_test, y_test, keras_top1, args.latency_runs)}
            r = results[variant]
            print(f"{args.name} {variant:<22} acc {r['accuracy']:.4f} ({(r['accuracy'] - keras_accuracy) * 100:+.2f} pp) "
                  f"agree {r['agreement']:.4f} {r['bytes'] / 1e6:6.2f} MB  {r['latency_ms']:.2f} ms  "
                  f"float ops {r['float_ops']}", flush=True)

        def convert(kind):
            with tflite.quiet_converter():
                return converter_for(source, calibration, kind).convert()

        record("float32", convert("float32"), "no quantization (the size reference)")
        record("int8", convert("int8"), "the export's int8: per-channel weights, per-tensor activations, uint8 in/out")
        from tensorflow.lite.tools import flatbuffer_utils

        stripped = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(tmp, "int8.tflite").read_bytes()))
        flatbuffer_utils.strip_strings(stripped)
        record("int8_stripped", bytes(flatbuffer_utils.convert_object_to_bytearray(stripped)),
               "the export's int8 with the tensor names removed (flatbuffer_utils.strip_strings)")
        record("per_tensor", convert("per_tensor"), "int8 with one scale per weight tensor (_experimental_disable_per_channel)")
        record("int16x8", convert("int16x8"), "int8 weights, int16 activations, int16 in/out: integer-only")
        record("dynamic_range", convert("dynamic_range"), "int8 weights, float activations")
        equalized, pairs = equalize_before_batchnorm(scaled)
        if pairs:
            diff = export.max_diff(equalized.predict(x_test[:64].astype(np.float32), verbose=0),
                                   scaled.predict(x_test[:64].astype(np.float32), verbose=0))
            if diff > export.FLOAT_TOLERANCE:
                sys.exit(f"int8_study: error: equalizing changed the model's output by {diff:.2e}")
            export.saved_model(equalized, Path(tmp) / "equalized", x_test[:64])
            with tflite.quiet_converter():
                payload = converter_for(Path(tmp) / "equalized", calibration, "int8").convert()
            record("int8_equalized", payload, f"int8 of a copy with {pairs} BatchNormalization scale(s) moved "
                   f"before the ReLU into the convolution (max |difference| in float {diff:.1e})")
        ranking = debugger_ranking(source, calibration, debug_images)
        print(f"{args.name}: worst layers by rmse/scale: " + ", ".join(f"{op} {e:.2f}" for _, op, e in ranking[:10]), flush=True)
        record("float_depthwise", selective(source, calibration, debug_images, denylisted_ops=["DEPTHWISE_CONV_2D"]),
               "int8 with every depthwise convolution in float")
        for k in (k for k in TOP_K if k < len(ranking)):  # all in float is no quantization at all
            nodes = [name for name, _, _ in ranking[:k]]
            record(f"float_top{k}", selective(source, calibration, debug_images, denylisted_nodes=nodes),
                   f"int8 with the debugger's {k} worst layer(s) in float: {', '.join(nodes)}")

    judge(results, keras_accuracy)
    outputs.write_json(args.out, {
        "model": args.name, "model_sha256": outputs.sha256_of(args.model), "split": args.split, "images": len(x_test),
        "keras_accuracy": keras_accuracy, "temperature": temperature,
        "calibration_images": len(calibration), "debug_images": len(debug_images),
        "variants": results,
        "debugger_worst_layers": [{"tensor": t, "op": op, "rmse_over_scale": e} for t, op, e in ranking[:20]],
        "seconds": round(time.time() - started), "hardware": outputs.hardware(),
    })


def judge(results, keras_accuracy):
    """Each variant's size against the float32 file, its accuracy drop against Keras in pp, and
    whether both are within export's int8 targets (in place)."""
    reference = results["float32"]["bytes"]
    for r in results.values():
        r["size_ratio"] = r["bytes"] / reference
        r["accuracy_drop_pp"] = (keras_accuracy - r["accuracy"]) * 100
        r["meets_int8_targets"] = r["size_ratio"] <= export.INT8_SIZE_RATIO and r["accuracy_drop_pp"] <= export.INT8_ACCURACY_DROP_PP
    return results


if __name__ == "__main__":
    sys.exit(main())
