"""`make setup GPU=1`: TensorFlow's NVIDIA build, pinned by its own lock, which differs from the
CPU lock by exactly the NVIDIA wheels TensorFlow's `and-cuda` extra names."""

import re
from importlib import metadata

from conftest import REPO, run


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
