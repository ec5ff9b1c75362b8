import json
import re

import keras
import numpy as np
import pytest
from keras import layers

from cifar.models import cnn, mobilenet
from conftest import REPO, cnn_section, seed_train, shared_section


def test_cnn_layers_filters_and_params():
    model = cnn.build(cnn_section(convs_per_block=1))  # the seed's text read literally
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds == [
        "Rescaling", "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout",
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout",
        "Conv2D", "BatchNormalization", "GlobalAveragePooling2D",
        "Dense", "Dropout", "Dense",
    ]
    dense = [l for l in model.layers if isinstance(l, layers.Dense)]
    assert dense[0].units == 512 and dense[1].units == 10
    assert dense[1].activation.__name__ == "softmax"
    # 1,792 + 256 + 73,856 + 512 + 295,168 + 1,024 + 131,584 + 5,130
    assert model.count_params() == 509_322
    assert model.output_shape == (None, 10)


def test_cnn_params_change_the_network():
    model = cnn.build(cnn_section(filters=[8, 16, 32], kernel_size=5, block_dropout=[0.1, 0.3], dense_units=64,
                                  convs_per_block=1))
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 16, 32] and convs[0].kernel_size == (5, 5)
    assert [l.rate for l in model.layers if isinstance(l, layers.Dropout)] == [0.1, 0.3, 0.5]


def test_cnn_blocks_repeat_their_conv_bn_pair_as_the_seeds_other_reading():
    """convs_per_block: 2 reads "repeated layer blocks" as two Conv-BN pairs in each of the three
    blocks, the pooling and dropout after them unchanged; 1 is the literal reading above."""
    images = np.zeros((2, 64, 64, 3), np.uint8)  # the data's side and class count, not CIFAR-10's
    model = cnn.build(dict(side=64, filters=[8, 16, 32], convs_per_block=2, kernel_size=3, block_dropout=[0.25, 0.25],
                           dense_units=16, dense_dropout=0.5), images, 3)  # working at the data's side: no resize
    kinds = [type(l).__name__ for l in model.layers]
    pair = ["Conv2D", "BatchNormalization"]
    assert kinds == ["Rescaling", *pair * 2, "MaxPooling2D", "Dropout", *pair * 2, "MaxPooling2D", "Dropout",
                     *pair * 2, "GlobalAveragePooling2D", "Dense", "Dropout", "Dense"]
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 8, 16, 16, 32, 32] and convs[1].input.shape[-1] == 8
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 3)


def test_cnn_scales_raw_pixels_itself():
    model = cnn.build(cnn_section())
    assert isinstance(model.layers[0], layers.Rescaling) and model.layers[0].scale == pytest.approx(1 / 255)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A MobileNetV2 weights file with known values, written the way Keras writes them."""
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    # Random values; BatchNormalization variances positive, as in any real weights file.
    base.set_weights([(np.abs(rng.normal(0, 0.05, v.shape)) + 0.5 if "moving_variance" in v.path
                       else rng.normal(0, 0.05, v.shape)).astype("float32") for v in base.weights])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_test.weights.h5"
    base.save_weights(path)
    return path, base.get_weights()


def _backbone(model):
    return next(l for l in model.layers if isinstance(l, keras.Model))


def test_mobilenet_loads_a_weights_file_and_freezes_all_but_last_n(weights_file):
    path, expected = weights_file
    model = mobilenet.build_mobilenet(weights=str(path), input_size=32, trainable_layers=20, dropout=0.2,
                                      train_batchnorm=True)
    base = _backbone(model)
    for got, want in zip(base.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    flags = [l.trainable for l in base.layers]
    assert not any(flags[:-20]) and all(flags[-20:])
    assert base.layers[-1].name == "out_relu"
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds[-4:] == ["Functional", "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.output_shape == (None, 10)


def test_mobilenet_preprocesses_to_minus_one_one_and_upscales():
    model = mobilenet.build_mobilenet(weights=None, input_size=96, trainable_layers=5, dropout=0.2, train_batchnorm=True)
    scale = model.get_layer("scale_minus1_1")
    assert scale.scale == pytest.approx(1 / 127.5) and scale.offset == -1.0
    assert model.get_layer("upscale").output.shape[1:3] == (96, 96)
    assert _backbone(model).input_shape == (None, 96, 96, 3)
    assert model.input_shape == (None, 32, 32, 3)


def test_frozen_batchnorm_stays_in_inference_mode():
    model = mobilenet.build_mobilenet(weights=None, input_size=32, trainable_layers=3, dropout=0.2, train_batchnorm=True)
    base = _backbone(model)
    frozen_bn = next(l for l in base.layers if isinstance(l, layers.BatchNormalization) and not l.trainable)
    before = [w.copy() for w in frozen_bn.get_weights()]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 10, 10)
    model.fit(x, y, epochs=1, verbose=0)
    for got, want in zip(frozen_bn.get_weights(), before):  # gamma, beta, moving mean, moving var
        np.testing.assert_array_equal(got, want)


SECTION = {"input_size": 32, "trainable_layers": 20, "dropout": 0.2, "train_batchnorm": False,
           "augment": shared_section()["augment"], "train": seed_train(label_smoothing=0.1, augment=False),
           "phases": [{"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable_layers": 0},
                      {"name": "top", "epochs": 2, "learning_rate": 1e-4, "trainable_layers": 12}]}


def test_a_phase_unfreezes_the_top_but_keeps_batchnorm_frozen_and_starts_from_the_last_phase(weights_file, tmp_path):
    path, expected = weights_file
    head = mobilenet.phase_model(SECTION, str(path), SECTION["phases"][0], None, (32, 32, 3), 10)
    assert not any(l.trainable for l in _backbone(head).layers)
    for got, want in zip(_backbone(head).get_weights(), expected):  # the backbone's weights, untouched
        np.testing.assert_array_equal(got, want)
    head.get_layer("probabilities").kernel.assign(np.full((1280, 10), 0.01, np.float32))
    head.save(tmp_path / "head.keras")

    top = mobilenet.phase_model(SECTION, str(path), SECTION["phases"][1], tmp_path / "head.keras", (32, 32, 3), 10)
    trained = [l for l in _backbone(top).layers if l.trainable]
    assert trained and all(not isinstance(l, layers.BatchNormalization) for l in trained)
    assert {l.name for l in trained} <= {l.name for l in _backbone(top).layers[-12:]}
    np.testing.assert_array_equal(top.get_layer("probabilities").kernel.numpy(), np.float32(0.01))
    for got, want in zip(_backbone(top).get_weights(), expected):
        np.testing.assert_array_equal(got, want)


def stage_inputs(tmp_path):
    """Prepared arrays of 120 synthetic images, the stage's paths and the seed's shared settings."""
    import argparse

    import synthetic
    from cifar import data

    batch = synthetic.batch(120, seed=0)
    x = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    y = np.array(batch[b"labels"], np.uint8)
    data.save_prepared(tmp_path / "cifar10.npz", {
        "x_train": x[:80], "y_train": y[:80], "x_val": x[80:100], "y_val": y[80:100], "x_test": x[100:],
        "y_test": y[100:], "class_names": np.array(data.CLASS_NAMES), "archive_sha256": np.array("0" * 64)})
    args = argparse.Namespace(data=tmp_path / "cifar10.npz", model=tmp_path / "m.keras",
                              metrics=tmp_path / "m.json", state=tmp_path / "state", keep_checkpoint_on_nan=False,
                              live=tmp_path / "live")
    train = seed_train(batch_size=40, augment=False)
    shared = {"seed": 1, "augment": {**shared_section()["augment"], "resolution_scale": [1, 1], "rotation_degrees": 0,
                                     "shift_fraction": 0, "horizontal_flip": False}, "train": train}
    return args, shared, train


def test_the_stage_trains_the_phases_one_after_another(weights_file, tmp_path):
    from cifar import stage

    path, _ = weights_file
    args, shared, train = stage_inputs(tmp_path)
    from cifar import models

    plan = models.Plan(mobilenet.phases({**SECTION, "train": train}, str(path)), shared["augment"])
    stage.run("mobilenet", plan, args, {"shared": shared, "mobilenet": SECTION, "registry": {"module": "mobilenet"}},
              provenance={})
    import json

    from evaluate import read_history

    rows = read_history(args.live, "train@mobilenet")  # the run's one record, DVCLive's, across the phases
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-4, 0.95e-4])

    summary = json.loads(args.metrics.read_text())["mobilenet"]
    assert summary["epochs_run"] == 3 and set(summary["phases"]) == {"head", "top"}
    assert summary["phases"]["top"]["trainable_params"] > summary["phases"]["head"]["trainable_params"]
    assert not args.state.exists() or not any(args.state.iterdir())
    # DVCLive's log runs on across the phases: one step per epoch, the last epoch's in metrics.json.
    live = json.loads((args.live / "metrics.json").read_text())
    assert live["step"] == 2 and live["train"]["learning_rate"] == pytest.approx(0.95e-4)
    accuracy = (args.live / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text().splitlines()
    assert accuracy[0].split("\t") == ["step", "accuracy"] and [r.split("\t")[0] for r in accuracy[1:]] == ["0", "1", "2"]


def tiny_stage_run(tmp_path, **kwargs):
    from cifar import models, stage

    args, shared, train = stage_inputs(tmp_path)
    for key, value in kwargs.pop("args", {}).items():
        setattr(args, key, value)
    shared["train"] = {**train, **kwargs.pop("train", {})}
    build = kwargs.pop("build", lambda arrays: cnn.build(cnn_section(filters=[4, 8, 8], dense_units=8, convs_per_block=1)))
    plan = models.Plan([models.Phase(None, lambda arrays, previous: build(arrays), shared["train"])], shared["augment"])
    stage.run("cnn", plan, args, {"shared": shared, "registry": {"module": "cnn"}}, provenance={}, **kwargs)
    return args


def test_a_failure_after_training_keeps_the_resume_state(tmp_path, capsys, monkeypatch):
    """A kill (here an interrupt) while the outputs are written must not cost the training: the
    state stays, and the rerun reuses it (a half-written set of outputs is DVC's to remove: it
    removes a stage's outputs before running it again)."""
    from cifar import stage

    def broken(path, data):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(stage.outputs, "write_json", broken)
        with pytest.raises(KeyboardInterrupt):
            tiny_stage_run(tmp_path, train={"epochs": 2})
    assert (tmp_path / "state" / "cnn" / "result.json").is_file() and not (tmp_path / "m.json").exists()
    args = tiny_stage_run(tmp_path, train={"epochs": 2})
    assert "Training finished in an earlier attempt" in capsys.readouterr().out
    assert json.loads(args.metrics.read_text())["cnn"]["epochs_run"] == 2
    assert not (tmp_path / "state" / "cnn").exists()


def nan_in_epoch_two(arrays):
    from test_training import NaNAfter

    return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255), NaNAfter(2),
                             keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])


def test_a_nan_loss_fails_the_stage_naming_the_epoch_unless_asked_to_keep_the_checkpoint(tmp_path, capsys):
    from cifar import training

    with pytest.raises(training.TrainingError, match=r"the loss became NaN in epoch 2, .*--keep-checkpoint-on-nan"):
        tiny_stage_run(tmp_path, train={"epochs": 4}, build=nan_in_epoch_two)
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "m.json").exists()
    args = tiny_stage_run(tmp_path, train={"epochs": 4}, build=nan_in_epoch_two,
                          args={"keep_checkpoint_on_nan": True})
    assert "keeping the best model of the epochs before it" in capsys.readouterr().out
    summary = json.loads(args.metrics.read_text())["cnn"]
    assert summary["nan_epoch"] == 2 and summary["best_epoch"] == 1 and args.model.is_file()


@pytest.mark.parametrize("change, message", [
    # The default recipe is in phases: the top-level trainable_layers would change nothing.
    ({"trainable_layers": 40}, "mobilenet.trainable_layers = 40 is ignored by the recipe in phases"),
    ({"train_batchnorm": None}, "mobilenet.train_batchnorm is null, but the recipe in phases needs it"),
    ({"phases": [], "trainable_layers": 20}, "mobilenet.train_batchnorm = False is ignored by the seed's one phase"),
    ({"phases": [], "train_batchnorm": None},
     "mobilenet.trainable_layers is null, but the seed's one phase (phases: []) needs it"),
])
def test_a_key_the_chosen_recipe_ignores_is_refused(change, message):
    from cifar import models, params

    values = {**models.entry("mobilenet")[1], **change}
    with pytest.raises(params.ParamsError, match=re.escape(message)):
        mobilenet.validate(values)
    seed = {**values, "phases": [], "trainable_layers": 20, "train_batchnorm": None}
    mobilenet.validate(seed)  # the seed's settings, as the README gives them


def test_the_stage_says_and_records_where_it_trains(tmp_path, capsys):
    import tensorflow as tf

    from cifar import params
    from cifar.training import precision

    default = params.load(["shared"])["shared"]["train"]["precision"]
    args = tiny_stage_run(tmp_path, train={"epochs": 1, "precision": default})
    summary = json.loads(args.metrics.read_text())["cnn"]
    expected = "GPU:0 (" if tf.config.list_physical_devices("GPU") else "CPU ("
    used, feature, _ = precision.resolve(default)  # what the default resolves to, here
    assert summary["device"].startswith(expected) and (summary["precision"], summary["precision_feature"]) == (used, feature)
    assert summary["recipe"] == "default"  # the seed's settings have one recipe in every precision
    assert f"cnn: training on {summary['device']}, {used}" in capsys.readouterr().out


def test_a_model_that_did_not_learn_is_a_warning_with_what_to_try():
    from cifar import stage

    assert stage.at_chance("cnn", 0.9555, 10, "mixed_bfloat16") is None
    warning = stage.at_chance("fast", 0.1007, 10, "mixed_bfloat16")
    assert warning.startswith("fast: warning: best val accuracy 10.07% is at chance (10.00% for 10 classes): the "
                              "model did not learn. It trained in mixed_bfloat16: try float32")
    assert "try float32" not in stage.at_chance("fast", 0.30, 3, "float32")  # 30% of three classes: chance too


def test_each_model_works_at_its_own_side_inside_its_graph():
    """A folder prepared at 128 px (MobileNetV2's side): the seed CNN and the fast model bring it
    to their 32 px inside their graphs (the mean of each 4 x 4 block), so their exports take the
    prepared images as they are. At CIFAR-10's 32 px there is no such layer: the graph is as it was."""
    import keras

    from cifar import models
    from cifar.models import fast

    x = np.random.default_rng(0).integers(0, 256, (40, 128, 128, 3), dtype=np.uint8)
    section = cnn_section(filters=[4, 4, 4], dense_units=4, convs_per_block=1)
    big = cnn.build(section, x)
    assert big.input_shape == (None, 128, 128, 3) and isinstance(big.get_layer("to_32px"), keras.layers.AveragePooling2D)
    pooled = x.reshape(40, 32, 4, 32, 4, 3).astype(np.float32).mean(axis=(2, 4))
    small = cnn.build(section, pooled)
    small.set_weights(big.get_weights())
    np.testing.assert_allclose(big.predict(x, verbose=0), small.predict(pooled, verbose=0), atol=1e-5)
    assert not any(layer.name.startswith("to_") for layer in cnn.build(cnn_section()).layers)

    fast_section = {**models.entry("fast", REPO / "params.yaml")[1], "widths": [4, 4, 4], "whiten_images": 40}
    model = fast.build(fast_section, x)
    assert model.input_shape == (None, 128, 128, 3) and model.get_layer("fast_net").input_shape == (None, 32, 32, 3)
    assert not any(layer.name.startswith("to_") for layer in fast.build(fast_section, x[:, :32, :32]).layers)
    assert isinstance(models.to_side(48, 32), keras.layers.Resizing)  # not a multiple: bilinear
