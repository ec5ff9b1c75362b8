"""Mixed precision: the setting every recipe takes, its fallback on hardware without native
support, the custom pieces in bfloat16, and float32 artifacts from a model trained in it."""

import keras
import numpy as np
import pytest

from cifar import models, training, tta
from cifar.training import precision
from cifar.models import cnn, fast
from conftest import cnn_section


@pytest.mark.parametrize("requested, flags, capabilities, used", [
    ("float32", set(), [], "float32"),
    ("mixed_bfloat16", {"avx512f", "amx_bf16"}, [], "mixed_bfloat16"),      # Intel Xeon with AMX
    ("mixed_bfloat16", {"avx512f", "avx512_bf16"}, [], "mixed_bfloat16"),   # AMD EPYC with AVX512-BF16
    ("mixed_bfloat16", {"avx2"}, [], "float32"),                            # no native bfloat16
    ("mixed_float16", {"amx_bf16"}, [], "float32"),                         # no float16 path on a CPU
    ("mixed_bfloat16", set(), [(8, 0)], "mixed_bfloat16"),                  # A100
    ("mixed_bfloat16", set(), [(7, 0)], "float32"),                         # V100: no bfloat16
    ("mixed_float16", set(), [(7, 5)], "mixed_float16"),                    # T4
    ("mixed_float16", set(), [(6, 1)], "float32"),
])
def test_a_low_precision_is_used_only_where_the_hardware_computes_it(requested, flags, capabilities, used, monkeypatch):
    monkeypatch.delenv("CIFAR10_FORCE_FLOAT32", raising=False)
    policy, feature, note = precision.resolve(requested, flags, capabilities)
    assert policy == used
    assert (note is None) == (policy == requested)  # a fallback always says so
    if policy != "float32":
        assert feature.startswith(("CPU", "GPU"))


def test_the_switch_makes_any_host_fall_back_as_one_without_bfloat16(monkeypatch):
    monkeypatch.setenv("CIFAR10_FORCE_FLOAT32", "1")
    assert precision.resolve("mixed_bfloat16", {"amx_bf16"}, [(9, 0)])[::2] == (
        "float32", "CIFAR10_FORCE_FLOAT32 is set: training in float32, not mixed_bfloat16")


def test_this_machines_cpu_flags_are_read():
    flags = precision.cpu_flags()
    assert not flags or "fpu" in flags or "sse2" in flags


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def arrays_of(n=160):
    x = images(n)
    y = (x.mean(axis=(1, 2, 3)) > 127).astype(np.uint8) + 2 * (x[:, :16].mean(axis=(1, 2, 3)) > 127)
    return {"x_train": x[:128], "y_train": y[:128], "x_val": x[128:], "y_val": y[128:]}


FAST = models.entry("fast")[1]
SMALL_FAST = {**FAST, "widths": [8, 16, 16], "whiten_images": 128}


MUON = {"learning_rate": 0.24, "momentum": 0.6, "newton_schulz_steps": 3}


def test_the_fast_recipe_trains_in_bfloat16_and_resumes_exactly(tmp_path, muon=MUON):
    """BiasScaledSGD (with Muon for the filters: its momentum buffers are part of the resume
    state), lookahead, the whitening convolution and fused BatchNormalization without a scale,
    in mixed_bfloat16: the variables stay float32, the loss is finite, and a resumed run repeats
    the uninterrupted one (to 1e-4). The SGD filters' resume is tests/test_resume_e2e.py's, in
    the default precision."""
    from test_training import StopAfter

    arrays = arrays_of()
    train = {**FAST["train"], "epochs": 3, "batch_size": 32, "validate_every": 1, "precision": "mixed_bfloat16",
             "muon": muon}
    build = lambda: fast.build(SMALL_FAST, arrays["x_train"])  # noqa: E731
    best, straight, summary = training.fit(build, arrays, train, FAST["augment"], 3, tmp_path / "a", recipe=fast.recipe)
    expected = precision.resolve("mixed_bfloat16")[0]
    assert summary["precision"] == expected and summary["precision_feature"]
    assert all(np.isfinite(r["loss"]) for r in straight)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is back
    with pytest.raises(KeyboardInterrupt):
        training.fit(build, arrays, train, FAST["augment"], 3, tmp_path / "b", [StopAfter(2)], recipe=fast.recipe)
    resumed = training.fit(build, arrays, train, FAST["augment"], 3, tmp_path / "b", recipe=fast.recipe)[1]
    for a, b in zip(straight, resumed, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), (key, a, b)
    # The saved model comes back in float32, and predicts as the bfloat16 one did (to bfloat16's resolution).
    loaded = models.load(best)
    assert {layer.dtype_policy.name for layer in loaded.get_layer("fast_net").layers} == {"float32"}
    keras.mixed_precision.set_global_policy(expected)
    try:
        trained_in = keras.saving.load_model(best, compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = arrays["x_val"].astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trained_in.predict(x, verbose=0), atol=0.03)


def test_test_time_augmentation_and_mobilenets_frozen_batchnorm_in_bfloat16():
    from cifar.models import mobilenet

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = mobilenet.build_mobilenet(weights=None, input_size=32, trainable_layers=3, dropout=0.2,
                                          train_batchnorm=False)
        base = model.get_layer("mobilenetv2_1.00_32")
        frozen = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
        before = [np.array(layer.moving_mean) for layer in frozen]
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        x, y = images(16).astype(np.float32), keras.utils.to_categorical(np.arange(16) % 10, 10)
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        assert all(np.array_equal(a, np.array(layer.moving_mean)) for a, layer in zip(before, frozen))
        wrapped = tta.wrap(model, 2)
        probabilities = wrapped.predict(x, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)


def test_a_model_trained_in_bfloat16_exports_in_float32_and_agrees(tmp_path):
    """Export rebuilds the model in float32 with its trained weights: SavedModel, TF-Lite and
    TF.js see no bfloat16 op, and agree with the float32 model on >= 99.9% of the images."""
    import export as export_stage
    from cifar import data, inference

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = cnn.build(cnn_section(filters=[4, 8, 8], dense_units=16, convs_per_block=1))
        head = model.get_layer("probabilities")
        head.kernel.assign(head.kernel * 30.0)  # distinct top classes, as a trained model has
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "cnn.keras")
    float32 = models.load(tmp_path / "cnn.keras")
    assert {layer.dtype_policy.name for layer in float32.layers} == {"float32"}
    arrays = {"x_train": images(200, 4), "x_test": images(256, 5), "x_val": images(20, 6), "y_val": np.arange(20) % 10,
              "class_names": np.array(data.CLASS_NAMES)}
    out = tmp_path / "export"
    out.mkdir()
    artifacts = export_stage.export.export_all("cnn", float32, arrays, {"int8_calibration_images": 64, "int8_selection_images": 0,
                                                                  "int8_float_layers": 0, "tfjs_quantization": "none",
                                                                  "seed": 0}, out)
    reference = float32.predict(arrays["x_test"].astype(np.float32), verbose=0).argmax(1)
    for key in ("saved_model", "tflite_float32"):
        got = inference.load(out / artifacts[key]["file"]).predict(arrays["x_test"]).argmax(1)
        assert np.mean(got == reference) >= 0.999, key
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=str(out / artifacts["tflite_float32"]["file"])).get_tensor_details()
    assert {np.dtype(t["dtype"]).name for t in tensors} <= {"float32", "int32", "int64"}
