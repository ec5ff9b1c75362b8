"""The fast model (cifar/models/fast.py) and its recipe: whitening, the schedule, the optimizer,
lookahead, its hyperparameters in airbench's units, the flip/translate augmentation; and test-time
augmentation (cifar/tta.py), an inference choice applied to the trained model."""

import keras
import numpy as np
import pytest

import export as export_stage
from cifar import augment, data, models, training, tta
from cifar.models import fast
from cifar.training import airbench
from conftest import REPO

SECTION = models.entry("fast", REPO / "params.yaml")[1]


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def small():
    """The fast model's architecture at a small width (the same code path)."""
    return fast.build({**SECTION, "widths": [8, 16, 16], "whiten_images": 200}, images(200))


def test_whitening_filters_whiten_the_patches():
    x = images(300, 1).astype(np.float32) / 255.0
    x[..., 1] = 0.7 * x[..., 0] + 0.3 * x[..., 1]  # correlated channels, as in photographs
    x = (x - x.mean((0, 1, 2))) / x.std((0, 1, 2))
    kernel = fast.whitening_filters(x, 2)
    assert kernel.shape == (2, 2, 3, 24)
    patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    whitened = (patches - patches.mean(0)) @ kernel.reshape(12, 24)[:, :12]
    covariance = np.cov(whitened, rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.02)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])  # each direction and its negative


def test_the_architecture_is_airbench94s():
    model = fast.build(SECTION, images(64))
    assert SECTION["train"]["whiten_bias_epochs"] > 0
    assert model.count_params() == 1_973_944  # airbench94's 1.97M, the whitening bias's 24 included
    net = model.get_layer("fast_net")
    assert [layer.filters for layer in net.layers if isinstance(layer, keras.layers.Conv2D)] == [24, 64, 64, 256, 256, 256, 256]
    whiten = net.get_layer("whiten")  # frozen filters; only its bias trains
    assert [v.path.split("/")[-1] for v in whiten.trainable_weights] == ["bias"]
    assert not any(bn.scale for bn in net.layers if isinstance(bn, keras.layers.BatchNormalization))
    without = fast.build({**SECTION, "train": {**SECTION["train"], "whiten_bias_epochs": 0}}, images(64))
    assert without.count_params() == 1_973_920 and not without.get_layer("fast_net").get_layer("whiten").trainable_weights


def test_test_time_augmentation_averages_the_views_in_one_call_and_only_at_inference(small):
    x = images(4, 2).astype(np.float32)
    wrapped = tta.wrap(small, 2)

    def both(v):
        return 0.5 * (small(v, training=False) + small(v[:, :, ::-1], training=False))

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    expected = 0.5 * both(x) + 0.25 * both(padded[:, :32, :32]) + 0.25 * both(padded[:, 2:, 2:])
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(tta.wrap(small, 1).predict(x, verbose=0), both(x), atol=1e-6)
    assert tta.wrap(small, 0) is small
    layer = wrapped.get_layer("tta")
    np.testing.assert_allclose(layer(x, training=True), small(x, training=True), atol=1e-6)
    # One call on the stacked views: the wrapped graph holds each weight once.
    assert len(wrapped.weights) == len(small.weights)


def test_a_test_time_augmentation_level_ships_for_a_real_gain_worth_its_latency():
    import choose_tta  # studies/tta/

    right = np.arange(10_000) < 9_300

    def level(extra, ms):
        return {"correct": right | ((np.arange(10_000) >= 9_300) & (np.arange(10_000) < 9_300 + extra)),
                "tflite_latency_ms": ms}

    # +0.7 pp for 2x the latency ships; 0.2 pp more for 3x that is real (20 gained, none lost) but not worth it
    chosen, steps = choose_tta.choose({0: level(0, 1.0), 1: level(70, 2.0), 2: level(90, 6.0)})
    assert chosen == 1 and [s["significant"] for s in steps] == [True, True] and not steps[1]["worth_its_latency"]
    noisy = level(5, 1.1)  # 5 gained, 3 lost: within chance, however cheap
    noisy["correct"][:3] = False
    assert choose_tta.choose({0: level(0, 1.0), 1: noisy})[0] == 0


def test_the_fast_model_saves_loads_and_exports_with_its_augmentation(tmp_path):
    small = fast.build({**SECTION, "widths": [8, 16, 16], "whiten_images": 200}, images(200))
    # Untrained, its logits (times 1/9) give near-uniform probabilities, which int8's 1/256
    # steps round to ties; a bolder head gives the distinct top classes a trained model has.
    logits = small.get_layer("fast_net").get_layer("logits")
    logits.kernel.assign(logits.kernel * 200.0)
    small.save(tmp_path / "fast.keras")
    # The file names the model's module: the loader imports exactly it.
    assert models.registered_modules(tmp_path / "fast.keras") == ["cifar.models.fast"]
    loaded = tta.wrap(models.load(tmp_path / "fast.keras"), 2)
    x = images(8, 3).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tta.wrap(small, 2).predict(x, verbose=0), atol=1e-6)
    out = tmp_path / "export"
    out.mkdir()
    arrays = {"x_train": images(200, 4), "x_test": images(64, 5), "x_val": images(20, 6), "y_val": np.arange(20) % 10,
              "class_names": np.array(data.CLASS_NAMES)}
    plain = models.load(tmp_path / "fast.keras")
    artifacts = export_stage.export.export_all(
        "fast", loaded, arrays, {"int8_calibration_images": 64, "int8_selection_images": 0, "int8_float_layers": 0,
                                 "tfjs_quantization": "none", "seed": 0}, out, plain)
    from cifar import inference

    # The six views go through the network in one call: every format holds each weight once (the
    # TF.js weight shards, not its model.json, whose graph outweighs this tiny network's weights).
    shards = sum(f.stat().st_size for f in (out / "tfjs").glob("*.bin"))
    assert shards <= 1.1 * artifacts["tflite_float32"]["bytes"], (shards, artifacts["tflite_float32"]["bytes"])
    reference = loaded.predict(arrays["x_test"].astype(np.float32), verbose=0)
    for key in ("tflite_float32", "tflite_int8"):
        got = inference.load(out / artifacts[key]["file"]).predict(arrays["x_test"])
        agreement = np.mean(got.argmax(1) == reference.argmax(1))
        assert agreement >= (0.99 if key == "tflite_float32" else 0.8), (key, agreement)
    # Beside them, the plain model's float32 file: the model without its six views, held to no target.
    assert artifacts["tflite_float32_plain"]["target"] == "none"
    got = inference.load(out / artifacts["tflite_float32_plain"]["file"]).predict(arrays["x_test"])
    np.testing.assert_allclose(got, plain.predict(arrays["x_test"].astype(np.float32), verbose=0), atol=1e-4)
    assert not np.allclose(np.log(got + 1e-30), np.log(reference + 1e-30), atol=1e-2)  # not the shipped model's


def test_alternating_flip_and_translation():
    x = np.arange(6 * 32 * 32 * 3, dtype=np.uint8).reshape(6, 32, 32, 3) % 251
    index = np.arange(6)
    even = augment.flip_translate_batch(x, index, 7, 0, 0)
    odd = augment.flip_translate_batch(x, index, 7, 1, 0)
    for i in range(6):  # each image is mirrored in exactly one of two consecutive epochs
        mirrored = [np.array_equal(out[i], x[i, :, ::-1]) for out in (even, odd)]
        assert sorted(mirrored) == [False, True]
        assert any(np.array_equal(out[i], x[i]) for out in (even, odd))
    np.testing.assert_array_equal(even, augment.flip_translate_batch(x, index, 7, 0, 0))
    shifted = augment.flip_translate_batch(x, index, 7, 2, 2)
    for i in range(6):  # a translation of at most 2 px of the (possibly mirrored) image
        base = even[i]
        padded = np.pad(base, ((2, 2), (2, 2), (0, 0)), mode="reflect")
        assert any(np.array_equal(shifted[i], padded[dy:dy + 32, dx:dx + 32]) for dy in range(5) for dx in range(5))


def test_warmup_decay_schedule():
    schedule = fast.WarmupDecay(1.5, total_steps=400, warmup_steps=92, start=0.2, end=0.07)
    values = [float(schedule(s)) for s in (0, 46, 92, 246, 400, 500)]
    assert values == pytest.approx([0.3, 0.9, 1.5, 1.5 * (1 - 0.93 * 154 / 308), 0.105, 0.105], rel=1e-5)
    again = fast.WarmupDecay.from_config(schedule.get_config())
    assert float(again(200)) == pytest.approx(float(schedule(200)))


def test_bias_scaled_sgd_scales_bias_gradients_and_adds_l2():
    dense = keras.layers.Dense(1, name="d")
    dense.build((None, 1))
    dense.kernel.assign([[2.0]])
    dense.bias.assign([1.0])
    optimizer = fast.BiasScaledSGD(learning_rate=0.1, momentum=0.0, bias_scale=10.0, l2=0.5)
    optimizer.apply([keras.ops.ones((1, 1)), keras.ops.ones((1,))], [dense.kernel, dense.bias])
    assert float(dense.kernel.numpy()[0, 0]) == pytest.approx(2.0 - 0.1 * (1.0 + 0.5 * 2.0), abs=1e-6)
    assert float(dense.bias.numpy()[0]) == pytest.approx(1.0 - 0.1 * (10.0 + 0.5 * 1.0), abs=1e-6)


class CallbackLookahead(keras.callbacks.Callback):
    """The lookahead this project ran as a callback until it moved into the optimizer: the
    reference the in-graph one must match. It synced with the host every step."""

    def __init__(self, every, final_decay, total_steps, steps_per_epoch):
        super().__init__()
        self.every, self.final_decay = every, final_decay
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch

    def on_train_begin(self, logs=None):
        self.weights = [w for w in self.model.weights if "float" in str(w.dtype)]
        self.slow = [w.numpy() for w in self.weights]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every and batch != self.steps_per_epoch - 1:
            return
        decay = self.final_decay * min(step / self.total_steps, 1.0) ** 3
        for weight, slow in zip(self.weights, self.slow):
            slow *= decay
            slow += (1.0 - decay) * weight.numpy()
            weight.assign(slow)


def lookahead_run(in_graph, steps_per_execution=1, epochs=2):
    """Final weights of a small BN network trained 2 epochs of 7 steps with lookahead every 3
    steps (so an epoch's last step is due too), the same data and start either way."""
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).normal(size=(112, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(112) % 10, 10)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")])
    steps, total = 7, 7 * epochs
    settings = {"every": 3, "final_decay": 0.9, "total_steps": total, "steps_per_epoch": steps}
    optimizer = fast.BiasScaledSGD(
        learning_rate=0.2, momentum=0.8, nesterov=True, bias_scale=4.0, l2=1e-3,
        **({"lookahead_every": 3, "lookahead_decay": 0.9, "total_steps": total, "steps_per_epoch": steps} if in_graph else {}))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", steps_per_execution=steps_per_execution)
    optimizer.watch(model.weights)
    callbacks = [fast.StartLookahead()] if in_graph else [CallbackLookahead(**settings)]
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return [w.numpy() for w in model.weights]


def test_the_in_graph_lookahead_gives_the_weights_of_the_callback_it_replaced():
    reference, in_graph = lookahead_run(in_graph=False), lookahead_run(in_graph=True)
    start = lookahead_run(in_graph=False, epochs=0)
    assert all(not np.allclose(a, b) for a, b in zip(reference, start) if np.ndim(a))  # every weight moved
    for a, b in zip(reference, in_graph, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_the_in_graph_lookahead_works_with_steps_per_execution():
    """7 steps an epoch run as executions of 8 steps (Keras cuts the last short): lookahead still
    acts at its own steps, which a batch callback (called once per execution) could not."""
    for a, b in zip(lookahead_run(in_graph=True), lookahead_run(in_graph=True, steps_per_execution=8), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_lookahead_without_watched_weights_is_a_clear_error():
    dense = keras.layers.Dense(1)
    dense.build((None, 1))
    optimizer = fast.BiasScaledSGD(learning_rate=0.1, lookahead_every=2, lookahead_decay=0.5, total_steps=4)
    with pytest.raises(ValueError, match=r"needs optimizer.watch\(model.weights\)"):
        optimizer.apply([keras.ops.ones((1, 1)), keras.ops.ones((1,))], [dense.kernel, dense.bias])


def test_the_fast_recipe_trains_and_validates_as_configured(tmp_path):
    import synthetic

    batch = synthetic.batch(300, seed=0)
    x = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    y = np.array(batch[b"labels"], np.uint8)
    arrays = {"x_train": x[:256], "y_train": y[:256], "x_val": x[256:], "y_val": y[256:]}
    train = {**SECTION["train"], "epochs": 3, "batch_size": 64, "validate_every": 2}
    section = {**SECTION, "widths": [8, 16, 16], "whiten_images": 256}
    _, rows, summary = training.fit(lambda: fast.build(section, arrays["x_train"]), arrays, train,
                                    SECTION["augment"], 1, tmp_path / "state", recipe=fast.recipe)
    validated = [not np.isnan(r["val_accuracy"]) for r in rows]
    assert validated == [False, True, True]  # epoch 2 (every 2nd) and the last
    assert rows[-1]["loss"] < rows[0]["loss"] and summary["best_epoch"] in (2, 3)
    assert [r["lr"] for r in rows] == sorted([r["lr"] for r in rows], reverse=True)  # decaying after warm-up


class WhitenBiasPerEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        whiten = self.model.get_layer("fast_net").get_layer("whiten")
        self.layer, self.kernel = whiten, whiten.kernel.numpy()
        self.seen = [whiten.bias.numpy()]

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.layer.bias.numpy())


def test_the_whitening_bias_trains_for_its_epochs_then_stops(tmp_path):
    """airbench's whitening bias: trained in epoch 1 of 3 (at the plain learning rate), then its
    gradient is zero; only the fading momentum moves it in epoch 3. The filters never train."""
    import synthetic

    batch = synthetic.batch(544, seed=1)
    x = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    y = np.array(batch[b"labels"], np.uint8)
    arrays = {"x_train": x[:512], "y_train": y[:512], "x_val": x[512:], "y_val": y[512:]}
    train = {**SECTION["train"], "epochs": 3, "batch_size": 64, "validate_every": 3, "whiten_bias_epochs": 1}
    section = {**SECTION, "widths": [8, 16, 16], "whiten_images": 256, "train": train}
    watch = WhitenBiasPerEpoch()
    model = lambda: fast.build(section, arrays["x_train"])  # noqa: E731
    no_bias = {**section, "train": {**train, "whiten_bias_epochs": 0}}
    assert model().count_params() == fast.build(no_bias, images(64)).count_params() + 24
    training.fit(model, arrays, train, SECTION["augment"], 1, tmp_path / "state", [watch], recipe=fast.recipe)
    moved = [float(np.abs(b - a).max()) for a, b in zip(watch.seen, watch.seen[1:])]
    # It moves in epoch 1 in either precision (0.0008 in float32 and about 0.002 in bfloat16 here),
    # far above float32's rounding, and by a fifth of that at most in epoch 3.
    assert moved[0] > 1e-4 and moved[2] < 0.2 * moved[0], moved
    np.testing.assert_allclose(watch.layer.kernel.numpy(), watch.kernel, atol=1e-6)  # lookahead's blend rounds


def test_convolutions_start_with_dirac_filters():
    """airbench's init: each 3x3 conv's first in_channels filters pass their channel through."""
    net = fast.build({**SECTION, "widths": [8, 16, 16], "whiten_images": 200}, images(200)).get_layer("fast_net")
    first = net.get_layer("group1_conv1").kernel.numpy()  # 24 -> 8: all 8 filters are deltas
    np.testing.assert_array_equal(first[1, 1, :8, :], np.eye(8))
    assert not first[0].any() and not first[1, 1, 8:, :].any()
    widen = net.get_layer("group2_conv1").kernel.numpy()  # 8 -> 16: the first 8 are deltas
    np.testing.assert_array_equal(widen[1, 1, :, :8], np.eye(8))
    # The other 8 are drawn at random (Keras' default initializer): no deltas, every filter different.
    rest = widen[..., 8:].reshape(-1, 8)
    assert not np.array_equal(widen[1, 1, :, 8:], np.eye(8)) and len({f.tobytes() for f in rest.T}) == 8
    assert rest.std() > 0 and np.count_nonzero(rest) == rest.size


def test_airbenchs_units_convert_to_the_per_step_values_the_model_trained_with():
    """params.yaml states airbench's own values (per 1,024 images, summed loss): 11.5 and 0.0153.
    At batch 1024 and momentum 0.85 they are the per-step 1.5 and 0.0019957 this project used
    before it stated them in airbench's units (airbench: lr / (1024 x (1 + 1 / (1 - momentum))),
    x batch for the batch-mean loss; weight decay x batch / the same)."""
    train = SECTION["train"]
    assert (train["learning_rate"], train["weight_decay"], train["batch_size"], train["momentum"]) == (11.5, 0.0153, 1024, 0.85)
    peak, decay = fast.per_step(train["learning_rate"], train["weight_decay"], train["momentum"], train["batch_size"])
    assert peak == pytest.approx(1.5, rel=1e-12)
    assert decay == pytest.approx(0.0019957, rel=5e-5)  # the 5-digit value params.yaml held
    assert fast.per_step(11.5, 0.0153, 0.85, 512) == pytest.approx((0.75, decay / 2), rel=1e-12)  # per image


def test_weight_decay_is_airbenchs_per_step_share_of_each_weight():
    """PyTorch's SGD with weight_decay = wd / lr removes schedule x wd of each weight per step;
    Keras' batch-mean loss at rate lr_peak x schedule gets it as L2 = wd / lr_peak."""
    made = fast.recipe(SECTION["train"], steps_per_epoch=39)
    optimizer, peak = made.optimizer, float(made.optimizer.learning_rate) / 0.2  # step 0: 0.2 x the peak
    assert optimizer.l2 * peak == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / (1 - 0.85))), rel=1e-6)


def newton_schulz(matrix, steps):
    """NumPy copy of airbench94_muon's zeropower_via_newtonschulz5 (in float64): the reference."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix / (np.linalg.norm(matrix) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalise_is_newton_schulz_and_flattens_the_spectrum(shape):
    g = np.random.default_rng(0).normal(size=shape) * np.linspace(0.01, 3, shape[1])  # ill-conditioned
    got = keras.ops.convert_to_numpy(airbench.orthogonalise(keras.ops.convert_to_tensor(g.astype("float32")), 5))
    np.testing.assert_allclose(got, newton_schulz(g, 5), rtol=1e-3, atol=1e-4)
    singular = np.linalg.svd(got, compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.3  # the raw spectrum spanned 300x
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    assert np.sum(got * (u @ vt)) / (np.linalg.norm(got) * np.linalg.norm(u @ vt)) > 0.95  # ~ U V^T


def test_muon_steps_the_filters_and_sgd_the_rest():
    """Two steps of BiasScaledSGD with Muon on a conv kernel, its bias and a dense kernel, against
    a NumPy reference: the filter takes Muon's step (Nesterov momentum, rescaled to norm
    sqrt(out), orthogonalised (out, k*k*in) update, no L2); the others SGD with L2 and the bias scale."""
    conv, dense = keras.layers.Conv2D(4, 3, name="c"), keras.layers.Dense(2, name="d")
    conv.build((None, 5, 5, 3))
    dense.build((None, 3))
    rng = np.random.default_rng(1)
    variables = [conv.kernel, conv.bias, dense.kernel]
    start = [v.numpy().astype(np.float64) for v in variables]
    grads = [[rng.normal(size=v.shape) for v in variables] for _ in range(2)]
    lr, scale, mu, l2, bias_scale = 0.1, 2.0, 0.6, 0.01, 3.0
    optimizer = fast.BiasScaledSGD(learning_rate=lr, momentum=0.0, bias_scale=bias_scale, l2=l2,
                                   muon_scale=scale, muon_momentum=mu, newton_schulz_steps=3)
    for step in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g.astype("float32")) for g in step], variables)
    kernel, bias, head = start
    buffer = np.zeros_like(kernel)
    for g_kernel, g_bias, g_head in grads:
        buffer = mu * buffer + g_kernel
        direction = (g_kernel + mu * buffer).transpose(3, 0, 1, 2).reshape(4, -1)
        update = newton_schulz(direction, 3).reshape(4, 3, 3, 3).transpose(1, 2, 3, 0)
        kernel = kernel * 2.0 / np.linalg.norm(kernel) - lr * scale * update
        bias = bias - lr * (bias_scale * g_bias + l2 * bias)
        head = head - lr * (g_head + l2 * head)
    for variable, expected in zip(variables, (kernel, bias, head)):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=2e-4, atol=2e-5)
    assert np.linalg.norm(conv.kernel.numpy()) == pytest.approx(2.0, rel=0.2)  # held near sqrt(out)
    again = fast.BiasScaledSGD.from_config(optimizer.get_config())
    assert (again.muon_scale, again.muon_momentum, again.newton_schulz_steps) == (scale, mu, 3)


@pytest.mark.parametrize("muon, error", [
    ({"learning_rate": 0.24, "momentum": 0.6}, "missing key 'fast.train.muon.newton_schulz_steps'"),
    ({"learning_rate": 0, "momentum": 0.6, "newton_schulz_steps": 3},
     "fast.train.muon.learning_rate = 0 is not allowed; expected a number in (0, 10]"),
    ({"learning_rate": 0.24, "momentum": 1.0, "newton_schulz_steps": 3},
     "fast.train.muon.momentum = 1.0 is not allowed; expected a number in [0, 1)"),
    ("yes", "fast.train.muon = 'yes' is not allowed; expected a mapping of keys: learning_rate, momentum, "
            "newton_schulz_steps, or null"),
])
def test_muon_settings_are_checked(muon, error):
    from cifar import params

    section = {**SECTION, "train": {**SECTION["train"], "muon": muon}}
    with pytest.raises(params.ParamsError, match="train.muon") as raised:
        fast.validate(section)
    assert error in str(raised.value)


def test_the_recipe_gives_muon_its_peak_on_the_schedules_shape():
    train = {**SECTION["train"], "muon": {"learning_rate": 0.24, "momentum": 0.6, "newton_schulz_steps": 3}}
    optimizer = fast.recipe(train, steps_per_epoch=39).optimizer
    peak, _ = fast.per_step(train["learning_rate"], train["weight_decay"], train["momentum"], train["batch_size"])
    assert optimizer.muon_scale * peak == pytest.approx(0.24) and optimizer.muon_momentum == 0.6
    assert fast.recipe(SECTION["train"], steps_per_epoch=39).optimizer.muon_scale == 0.0  # params.yaml: off


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 0.05)])
def test_fused_batchnorm_trains_and_infers_as_keras_batchnorm(policy, tolerance):
    """`batchnorm: fused` is Keras' layer with TF's fused kernel in training: the same output,
    gradients and moving statistics in a training step (to float32's or bfloat16's resolution),
    the same variables, and Keras' own arithmetic at inference."""
    import tensorflow as tf

    x = images(64, seed=4)
    built = {}
    keras.mixed_precision.set_global_policy(policy)
    try:
        for kind in ("keras", "fused"):
            keras.utils.set_random_seed(0)
            built[kind] = fast.build({**SECTION, "widths": [8, 16, 16], "whiten_images": 64, "batchnorm": kind}, x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain, fused = built["keras"], built["fused"]
    assert [w.path for w in plain.weights] == [w.path for w in fused.weights]
    fused.set_weights(plain.get_weights())
    assert {type(layer).__name__ for layer in fused.get_layer("fast_net").layers} >= {"FusedBatchNormalization"}
    batch = tf.constant(x, tf.float32)
    outputs, grads = {}, {}
    for kind, model in built.items():
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            loss = tf.reduce_sum(out[:, 0])
        outputs[kind], grads[kind] = out.numpy(), tape.gradient(loss, model.trainable_weights)
    np.testing.assert_allclose(outputs["fused"], outputs["keras"], atol=tolerance)
    for a, b in zip(grads["keras"], grads["fused"], strict=True):
        assert np.linalg.norm(b - a) <= max(tolerance, 1e-3) * 10 * (np.linalg.norm(a) + 1e-6)
    # The moving statistics moved alike; the variance by the unbiased estimate's n/(n-1), here at
    # most 1.002 (64 images of 3x3 maps in the last group).
    for a, b in zip(plain.weights, fused.weights, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-2 if policy != "float32" else 2e-3, atol=1e-4)
    np.testing.assert_allclose(fused.predict(x, verbose=0), plain.predict(x, verbose=0), atol=tolerance)


def test_the_float32_recipe_runs_exactly_where_training_resolves_to_float32(monkeypatch):
    """fast.float32 is laid over the section only where the precision falls back to float32 (as on
    a CPU without bfloat16: CIFAR10_FORCE_FLOAT32), and the plan says which recipe it is; a bad
    key inside it is refused as the section's own would be."""
    from cifar import params

    section = {**SECTION, "train": {**SECTION["train"], "precision": "mixed_bfloat16"},
               "float32": {"train": {"epochs": 9}, "widths": [8, 16, 16]}}
    monkeypatch.setenv("CIFAR10_FORCE_FLOAT32", "1")
    plan = fast.plan(section)
    assert (plan.variant, plan.epochs, plan.phases[0].train["epochs"]) == ("float32", 9, 9)
    monkeypatch.setenv("CIFAR10_FORCE_FLOAT32", "0")
    on_bfloat16 = fast.plan(section)
    expected = "float32" if training.precision.resolve("mixed_bfloat16")[0] == "float32" else "default"
    assert on_bfloat16.variant == expected  # this host's own resolution
    assert fast.plan({**section, "float32": None}).variant == "default"
    with pytest.raises(params.ParamsError, match=r"fast \(with fast.float32 laid over it\).train.epochs = 0"):
        fast.validate({**section, "float32": {"train": {"epochs": 0}}})
