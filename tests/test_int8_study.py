"""studies/int8/int8_study.py: every post-training quantization variant of one model, measured."""

import json

import numpy as np
import pytest

from conftest import REPO, run, script
from cifar import data


def tiny_depthwise_model(path):
    """Rescaling, a conv, a depthwise conv with BN and ReLU6 (MobileNetV2's pattern), a softmax."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)


def test_every_variant_is_measured_and_integer_only_is_told_apart(tmp_path):
    rng = np.random.default_rng(0)
    pixels = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    labels = lambda n: rng.integers(0, 10, n).astype(np.uint8)  # noqa: E731
    prepared = tmp_path / "cifar10.npz"
    np.savez(prepared, x_train=pixels(60), y_train=labels(60), x_val=pixels(20), y_val=labels(20),
             x_test=pixels(20), y_test=labels(20), class_names=np.array(data.CLASS_NAMES))
    tiny_depthwise_model(tmp_path / "tiny.keras")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    out = tmp_path / "study" / "cnn.json"
    run(["python", script("int8_study"), "--name", "cnn", "--model", str(tmp_path / "tiny.keras"),
         "--data", str(prepared), "--out", str(out), "--debug-images", "8", "--latency-runs", "2"], cwd=tmp_path)
    study = json.loads(out.read_text())
    variants = study["variants"]
    # Seven quantized layers: keeping 10 in float would keep them all, so that variant is left out.
    assert set(variants) == {"float32", "int8", "int8_stripped", "per_tensor", "int16x8", "dynamic_range",
                             "float_depthwise", "float_top1", "float_top3"}
    assert len(study["debugger_worst_layers"]) == 7
    assert study["split"] == "val" and study["images"] == 20 and study["calibration_images"] == 60  # all 60: fewer than the 1,000 asked
    assert variants["float32"]["size_ratio"] == 1.0 and variants["float32"]["float_ops"] > 0
    assert variants["int8"]["float_ops"] == 0 and variants["int16x8"]["float_ops"] == 0
    assert variants["dynamic_range"]["float_ops"] > 0
    assert variants["int8_stripped"]["bytes"] < variants["int8"]["bytes"]
    assert variants["int8_stripped"]["accuracy"] == variants["int8"]["accuracy"]
    assert "DEPTHWISE_CONV_2D" in variants["float_depthwise"]["float_op_kinds"]
    assert variants["float_top1"]["float_ops"] > 0 and study["debugger_worst_layers"]
    # The float32 TF-Lite file is the Keras model: the same accuracy on the same 20 images.
    assert variants["float32"]["accuracy"] == pytest.approx(study["keras_accuracy"], abs=0.05 + 1e-9)
    assert variants["float32"]["accuracy_drop_pp"] == pytest.approx((study["keras_accuracy"] - variants["float32"]["accuracy"]) * 100)
    assert all(r["latency_ms"] > 0 for r in variants.values())


def test_a_variant_meets_the_int8_targets_only_within_both():
    import int8_study

    judged = int8_study.judge({
        "float32": {"bytes": 1000, "accuracy": 0.90},
        "within_both": {"bytes": 300, "accuracy": 0.896},  # 30.0%, 0.4 pp
        "one_byte_over": {"bytes": 301, "accuracy": 0.90},
        "too_inaccurate": {"bytes": 250, "accuracy": 0.894},  # 0.6 pp
    }, keras_accuracy=0.90)
    assert {k: v["meets_int8_targets"] for k, v in judged.items()} == {
        "float32": False, "within_both": True, "one_byte_over": False, "too_inaccurate": False}
    assert judged["within_both"]["size_ratio"] == 0.3 and judged["too_inaccurate"]["accuracy_drop_pp"] == pytest.approx(0.6)


def test_equalizing_moves_the_batchnorm_scale_before_the_relu_and_keeps_the_outputs():
    import keras

    import int8_study
    from test_export import images, small_cnn

    # As in a trained model: the conv's output channels differ in size by orders of magnitude,
    # and the BatchNormalization's statistics are those of its real input.
    model, x = small_cnn(), images(16).astype(np.float32)
    rng = np.random.default_rng(3)
    conv, bn = model.layers[1], model.layers[2]
    kernel, bias = (np.asarray(w) for w in conv.get_weights())
    factor = 10.0 ** rng.uniform(-2, 1, kernel.shape[-1])
    conv.set_weights([kernel * factor, bias * factor])
    relu = keras.Model(model.inputs, conv.output).predict(x, verbose=0)
    gamma = rng.uniform(0.5, 2, factor.shape) * np.where(np.arange(len(factor)) < 2, -1, 1)  # two negative scales
    bn.set_weights([gamma, rng.normal(0, 0.5, factor.shape), relu.mean(axis=(0, 1, 2)), relu.var(axis=(0, 1, 2)) + 1e-6])
    equalized, pairs = int8_study.equalize_before_batchnorm(model)
    assert pairs == 1  # the second conv is linear: TF-Lite folds its BatchNormalization itself
    np.testing.assert_allclose(equalized.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert isinstance(equalized.layers[2], keras.layers.DepthwiseConv2D)
    # The ReLU's output channels now span the BatchNormalization's output ranges, not its inputs'.
    relu_out = keras.Model(equalized.inputs, equalized.layers[1].output).predict(x, verbose=0)
    before = keras.Model(model.inputs, model.layers[1].output).predict(x, verbose=0)
    spread = lambda a: np.percentile(a.max(axis=(0, 1, 2)), 90) / max(np.percentile(a.max(axis=(0, 1, 2)), 10), 1e-6)  # noqa: E731
    assert spread(relu_out) < spread(before)
    assert int8_study.equalize_before_batchnorm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))[1] == 0
