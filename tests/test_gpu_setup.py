"""`make setup GPU=1`: TensorFlow's NVIDIA build, pinned by its own lock, which differs from the
CPU lock by exactly the NVIDIA wheels TensorFlow's `and-cuda` extra names."""

import re
from importlib import metadata

from conftest import REPO, cnn_section, run


def pins(path):
    return {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower(): line.split("==")[1].strip()
            for line in path.read_text().splitlines() if "==" in line}


def test_the_gpu_lock_is_the_cpu_lock_plus_tensorflows_cuda_wheels():
    cpu, gpu = pins(REPO / "requirements.lock"), pins(REPO / "requirements-gpu.lock")
    extra = {}
    for requirement in metadata.requires("tensorflow"):
        if re.search(r"""extra\s*==\s*['"]and-cuda['"]""", requirement):
            name, version = re.match(r"([\w.-]+)\s*==\s*([\w.]+)", requirement).groups()
            extra[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert extra and all(name.startswith("nvidia-") for name in extra)
    assert {k: v for k, v in gpu.items() if k in cpu} == cpu  # the CPU set, unchanged
    assert {k: v for k, v in gpu.items() if k not in cpu} == extra  # and exactly the CUDA wheels, as TF pins them
    assert metadata.version("tensorflow") == cpu["tensorflow"]
    assert "tensorflow[and-cuda]==" + cpu["tensorflow"] in (REPO / "requirements-gpu.txt").read_text()


def test_make_setup_gpu_installs_from_the_gpu_files_and_the_default_stays_cpu():
    gpu = run(["make", "-n", "-B", "setup", "GPU=1"], cwd=REPO).stdout
    assert "-r requirements-gpu.txt -c requirements-gpu.lock" in gpu
    cpu = run(["make", "-n", "-B", "setup"], cwd=REPO).stdout
    assert "-r requirements.txt -c requirements.lock" in cpu and "gpu" not in cpu


def test_the_gpu_check_writes_the_device_the_rates_and_the_time_to_accuracy(tmp_path):
    import json

    import numpy as np

    from cifar import data
    from cifar.models import cnn

    import gpu_check

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20, dtype=np.uint8) % 10
    data.save_prepared(tmp_path / "cifar10.npz", {"x_train": x, "y_train": y, "x_val": x, "y_val": y, "x_test": x,
                                                  "y_test": y, "class_names": np.array(data.CLASS_NAMES),
                                                  "archive_sha256": np.array("0" * 64)})
    model = cnn.build(cnn_section(filters=[4, 4, 4], dense_units=4, convs_per_block=1))
    model.save(tmp_path / "fast.keras")
    rates = {"train_img_per_s": 5000.0, "augmentation_img_per_s": 2500.0, "augmentation_vs_training": 0.5,
             "fraction_of_matmul": 0.4, "predicted_time_vs_seed_recipe": 0.45}
    (tmp_path / "bench.json").write_text(json.dumps({"models": {"fast": rates, "cnn": rates}}))
    (tmp_path / "train.json").write_text(json.dumps({"fast": {
        "device": "GPU:0 (NVIDIA H200)", "precision": "float32", "jit_compile": True, "best_val_accuracy": 0.9,
        "epochs_run": 13, "wall_time_s": 60.0, "train_img_per_s": 9000.0}}))
    out = tmp_path / "bench_gpu.json"
    run(["python", str(REPO / "studies" / "bench" / "gpu_check.py"), "--bench", str(tmp_path / "bench.json"),
         "--train-metrics", str(tmp_path / "train.json"), "--model", str(tmp_path / "fast.keras"),
         "--data", str(tmp_path / "cifar10.npz"), "--out", str(out)], cwd=REPO)
    result = json.loads(out.read_text())
    predicted = model.predict(x.astype("float32"), verbose=0).argmax(axis=1)
    assert result["device"] == "GPU:0 (NVIDIA H200)" and result["precision"] == "float32"
    assert result["models"]["fast"]["augmentation_vs_training"] == 0.5
    assert result["models"]["fast"]["predicted_time_vs_seed_recipe"] == 0.45  # bench's field, per model
    assert result["fast"]["wall_time_s"] == 60.0 and result["fast"]["test_accuracy"] == float(np.mean(predicted == y))
    assert gpu_check.report(json.loads((tmp_path / "bench.json").read_text()),
                            json.loads((tmp_path / "train.json").read_text()), 0.5)["fast"]["test_accuracy"] == 0.5
