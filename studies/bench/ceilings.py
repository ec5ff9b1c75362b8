"""The machine's ceilings, measured now, and a model's work per image: what `make bench` reads a
training rate against (studies/bench/bench.py). A nominal cores x FMA x clock figure says little on
a shared 2-vCPU host; the rate of a large matrix multiply and of a 3x3 convolution, measured in the
same run as the models, says what the machine offers at that moment.
"""

import time

import keras
import numpy as np


def forward_flops(model):
    """FLOPs (2 x multiply-adds) of one image's forward pass through the Conv2D, DepthwiseConv2D
    and Dense layers, nested models included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * c * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * c_out * kh * kw * layer.input.shape[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def matmul_gflops(sizes=(2048, 3072, 4096), repeats=3):
    """The best float32 matrix-multiply rate of this machine now, NumPy and TensorFlow, GFLOP/s."""
    import tensorflow as tf

    best = {}
    for n in sizes:
        a, b = (np.random.default_rng(n).random((n, n), dtype=np.float32) for _ in range(2))
        ta, tb = tf.constant(a), tf.constant(b)
        for name, multiply in (("numpy", lambda: a @ b), ("tensorflow", lambda: tf.matmul(ta, tb).numpy())):
            multiply()  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                multiply()
                rate = 2 * n**3 / (time.perf_counter() - start) / 1e9
                best[name] = max(best.get(name, 0.0), rate)
    return best


def precision_ceilings(precisions, n=2048, conv_shape=(256, 32, 32, 64), filters=256, repeats=3):
    """{precision: {"matmul": GFLOP/s, "conv3x3": GFLOP/s}}: TensorFlow's best rate now for an
    n x n matrix multiply and a 3x3 'same' convolution (batch, height, width, channels -> filters)
    in each precision's compute dtype (float32, bfloat16 or float16): the ceiling a model's
    training rate is a fraction of."""
    import tensorflow as tf

    dtypes = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}
    rng = np.random.default_rng(0)
    batch, height, width, channels = conv_shape
    found = {}
    for precision in precisions:
        dtype = dtypes[precision]
        a, b = (tf.constant(rng.random((n, n), dtype=np.float32), dtype) for _ in range(2))
        x = tf.constant(rng.random(conv_shape, dtype=np.float32), dtype)
        kernel = tf.constant(rng.random((3, 3, channels, filters), dtype=np.float32), dtype)
        work = {
            "matmul": (2 * n**3, tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))),
            "conv3x3": (2 * batch * height * width * filters * 9 * channels, tf.function(
                lambda: tf.reduce_sum(tf.cast(tf.nn.conv2d(x, kernel, 1, "SAME"), tf.float32)))),
        }
        found[precision] = {}
        for name, (flop, step) in work.items():
            step().numpy()  # tracing, warm-up
            best = 0.0
            for _ in range(repeats):
                start = time.perf_counter()
                step().numpy()
                best = max(best, flop / (time.perf_counter() - start) / 1e9)
            found[precision][name] = round(best, 1)
    return found


def bench_precisions():
    """float32, and each low precision this machine computes natively (cifar.training.precision:
    bfloat16 on an AMX-BF16 or AVX512-BF16 CPU or an Ampere GPU, float16 on a GPU)."""
    from cifar.training import precision

    return ["float32", *[p for p in precision.PRECISIONS[1:] if precision.resolve(p)[0] == p]]
