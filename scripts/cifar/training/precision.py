"""The precision a recipe trains in (Keras' policies: float32, mixed_bfloat16, mixed_float16).

A stage never silently runs slower than float32: a low precision is used only where the hardware
computes it natively (bfloat16: AMX-BF16 or AVX512-BF16, or a GPU of compute capability 8.0+;
float16: a GPU of 7.0+), else float32 with a one-line note in the log and metrics.
CIFAR10_FORCE_FLOAT32=1 makes any host fall back, as an AVX2-only CPU does."""

from __future__ import annotations

import os
from pathlib import Path

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CPU_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
GPU_MINIMUM = {"mixed_bfloat16": (8, 0), "mixed_float16": (7, 0)}


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's feature flags (empty off Linux)."""
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
    """(the policy to train in, the feature behind it, a note when it is not the one asked for)."""
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
