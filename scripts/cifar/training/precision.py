"""The precision a recipe trains in: `float32`, `mixed_bfloat16` or `mixed_float16` (Keras' dtype
policies: variables, the softmax and the loss stay float32; the layers compute in the low
precision).

The one rule: a stage never silently runs slower than float32. A low precision is used only where
the hardware computes it natively; elsewhere the stage falls back to float32 and says so in one
line, and its metrics record what it used and why.

- bfloat16: a CPU with AMX-BF16 or AVX512-BF16 (its flags in /proc/cpuinfo), or an NVIDIA GPU of
  compute capability 8.0 or more (Ampere and later);
- float16: an NVIDIA GPU of compute capability 7.0 or more (Volta and later). CPUs have no fast
  float16 path in TensorFlow: mixed_float16 on a CPU falls back to float32.

CIFAR10_FORCE_FLOAT32=1 makes any host fall back as one without either would: how the test suite
runs as an AVX2-only CPU runs it (`CIFAR10_FORCE_FLOAT32=1 make test`).
"""

from __future__ import annotations

import os
from pathlib import Path

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CPU_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
GPU_MINIMUM = {"mixed_bfloat16": (8, 0), "mixed_float16": (7, 0)}


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def gpu_capabilities():
    """The compute capability (major, minor) of every GPU TensorFlow sees."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found


def resolve(requested, flags=None, capabilities=None):
    """(the policy to train in, the hardware feature behind it, a note when it is not the one
    asked for, else None). `flags` and `capabilities` default to this machine's."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "float32":
        return "float32", "float32", None
    if os.environ.get("CIFAR10_FORCE_FLOAT32", "0") not in ("", "0"):  # as a host without low precision runs
        return "float32", "float32", f"CIFAR10_FORCE_FLOAT32 is set: training in float32, not {requested}"
    capabilities = gpu_capabilities() if capabilities is None else capabilities
    if capabilities:
        minimum = GPU_MINIMUM[requested]
        if all(c >= minimum for c in capabilities):
            return requested, f"GPU compute capability {min(capabilities)[0]}.{min(capabilities)[1]}", None
        return "float32", "float32", (
            f"{requested} needs a GPU of compute capability {minimum[0]}.{minimum[1]} or more; this one is "
            f"{min(capabilities)[0]}.{min(capabilities)[1]}: training in float32")
    if requested == "mixed_bfloat16":
        flags = cpu_flags() if flags is None else flags
        native = [flag for flag in CPU_BFLOAT16_FLAGS if flag in flags]
        if native:
            return requested, f"CPU {native[0]}", None
        return "float32", "float32", (
            "mixed_bfloat16 needs a CPU with AMX-BF16 or AVX512-BF16 (TensorFlow warns it runs far slower "
            "without); this CPU has neither: training in float32")
    return "float32", "float32", "mixed_float16 has no fast path on a CPU: training in float32"
