import keras
import numpy as np
import pytest
from keras import layers

from cifar import mobilenet, models


def test_cnn_layers_filters_and_params():
    model = models.build_cnn()
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
    model = models.build_cnn(filters=(8, 16, 32), kernel_size=5, block_dropout=(0.1, 0.3), dense_units=64)
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 16, 32] and convs[0].kernel_size == (5, 5)
    assert [l.rate for l in model.layers if isinstance(l, layers.Dropout)] == [0.1, 0.3, 0.5]


def test_cnn_scales_raw_pixels_itself():
    model = models.build_cnn()
    assert isinstance(model.layers[0], layers.Rescaling) and model.layers[0].scale == pytest.approx(1 / 255)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A MobileNetV2 weights file with known values, written the way Keras writes them."""
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    base.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in base.get_weights()])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_test.weights.h5"
    base.save_weights(path)
    return path, base.get_weights()


def _backbone(model):
    return next(l for l in model.layers if isinstance(l, keras.Model))


def test_mobilenet_loads_a_weights_file_and_freezes_all_but_last_n(weights_file):
    path, expected = weights_file
    model = mobilenet.build_mobilenet(weights=str(path), input_size=32, trainable_layers=20)
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
    model = mobilenet.build_mobilenet(weights=None, input_size=96, trainable_layers=5)
    scale = model.get_layer("scale_minus1_1")
    assert scale.scale == pytest.approx(1 / 127.5) and scale.offset == -1.0
    assert model.get_layer("upscale").output.shape[1:3] == (96, 96)
    assert _backbone(model).input_shape == (None, 96, 96, 3)
    assert model.input_shape == (None, 32, 32, 3)


def test_frozen_batchnorm_stays_in_inference_mode():
    model = mobilenet.build_mobilenet(weights=None, input_size=32, trainable_layers=3)
    base = _backbone(model)
    frozen_bn = next(l for l in base.layers if isinstance(l, layers.BatchNormalization) and not l.trainable)
    before = [w.copy() for w in frozen_bn.get_weights()]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 10, 10)
    model.fit(x, y, epochs=1, verbose=0)
    for got, want in zip(frozen_bn.get_weights(), before):  # gamma, beta, moving mean, moving var
        np.testing.assert_array_equal(got, want)
