"""Where training runs: the devices, the distribution strategy (one device, MirroredStrategy,
MultiWorkerMirroredStrategy over TF_CONFIG's cluster), and what the chief shares with the other
workers (its weights, its resume state)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar.outputs import StageError


def configure_devices():
    """Let GPU memory grow as needed (two processes can share a device); with TF_DETERMINISTIC_OPS
    set, every op deterministic. Call it before any other TensorFlow work."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the runtime is already initialised: its setting stands
            pass
    # TF_DETERMINISTIC_OPS=1 (TensorFlow's old switch, which the tests set on a GPU host): every op
    # deterministic, cuDNN's included, so that two runs compare to 1e-4 there too.
    if os.environ.get("TF_DETERMINISTIC_OPS", "0") not in ("", "0"):
        tf.config.experimental.enable_op_determinism()


def nvidia_gpu():
    """The machine's word that it has an NVIDIA GPU (nvidia-smi -L, or /dev/nvidia0), or None."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0 and listed.stdout.strip():
            return listed.stdout.strip().splitlines()[0]
    return "/dev/nvidia0" if Path("/dev/nvidia0").exists() else None


def device_report(strategy):
    """(what trains, e.g. "CPU (2 cores)", its precision, a warning if an NVIDIA GPU is here but
    TensorFlow sees none)."""
    gpus = tf.config.list_physical_devices("GPU")
    precision = keras.mixed_precision.dtype_policy().name
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        used = min(strategy.num_replicas_in_sync, len(gpus)) if strategy.num_replicas_in_sync > 1 else 1
        where = (f"GPU:0 ({names[0]})" if used == 1
                 else f"{used} GPUs ({', '.join(sorted(set(names[:used])))})")
        return where, precision, None
    where = f"CPU ({os.cpu_count()} cores)"
    found = nvidia_gpu()
    warning = None if not found else (
        f"an NVIDIA GPU is here ({found}), but TensorFlow sees none, so this trains on the CPU: install "
        "TensorFlow's GPU build with `make setup GPU=1` (docs/training.md: Training on a GPU)")
    return where, precision, warning


def make_strategy(name):
    """`default`: the current device; `mirrored`: all GPUs, else all logical CPUs; `multi_worker`:
    the cluster in TF_CONFIG. Make it before any other TensorFlow work."""
    configure_devices()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        return _MultiWorkerStrategy(cluster_resolver=cluster_resolver())
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose reduce() takes what Keras 3's fit gives it
    (keras-team/keras#20585): nested batches one tensor at a time, scalars with axis=0."""

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def one(v):
            rank = (v.values[0] if isinstance(v, tf.distribute.DistributedValues) else tf.convert_to_tensor(v)).shape.rank
            return parent.reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def cluster_resolver(environ=None):
    """TF_CONFIG's cluster and this process's task, checked, as TensorFlow's resolver."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    if not raw.strip():
        raise StageError(f"distribute: multi_worker needs the cluster in the TF_CONFIG environment variable, e.g. "
                         f"TF_CONFIG='{example}' (index 0 on the first host, 1 on the second; docs/cluster.md)")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], task["index"]
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(f"TF_CONFIG is not a cluster and task ({type(err).__name__}: {err}); it should look like "
                         f"'{example}'") from None
    workers = cluster.get("worker", []) + cluster.get("chief", [])
    if not isinstance(index, int) or not 0 <= index < len(hosts) or not workers:
        raise StageError(f"TF_CONFIG's task {kind} {index} is not in its cluster ({kind}: {hosts})")
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def worker_role(strategy):
    """(is this process the chief, its task name or None for one process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    kind = getattr(resolver, "task_type", None)
    if not kind:
        return True, None
    index = resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief), f"{kind}-{index}"


def from_chief(strategy, values):
    """The int64 `values` as the chief holds them, on every worker (a sum only the chief adds to)."""
    values = np.ascontiguousarray(values, np.int64)

    @tf.function
    def share():
        context = tf.distribute.get_replica_context()
        mine = tf.constant(values)
        mine = tf.where(context.replica_id_in_sync_group == 0, mine, tf.zeros_like(mine))
        return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

    return strategy.experimental_local_results(strategy.run(share))[0].numpy()


def weights_from_chief(strategy, model, chief):
    """Give every worker's model the chief's float weights, bit for bit."""
    floats = [v for v in model.variables if v.dtype == "float32"]
    words = np.concatenate([np.asarray(v.numpy()).ravel().view(np.int32) for v in floats] or [np.zeros(0, np.int32)])
    shared = from_chief(strategy, words if chief else np.zeros_like(words)).astype(np.int32).view(np.float32)
    for v in floats:
        size = int(np.prod(v.shape))
        v.assign(shared[:size].reshape(v.shape))
        shared = shared[size:]


def bytes_from_chief(strategy, payload, chief):
    """`payload` (bytes, given on the chief; the others pass b"") on every worker."""
    size = int(from_chief(strategy, [len(payload) if chief else 0])[0])
    words = np.zeros(-(-size // 8), np.int64)
    if chief:
        words.view(np.uint8)[:size] = np.frombuffer(payload, np.uint8)
    return from_chief(strategy, words).view(np.uint8)[:size].tobytes()


def distributed_train_dataset(strategy, make_dataset):
    """`make_dataset(replicas)` per worker, each feeding its replicas their shares of the global batch."""
    total = strategy.num_replicas_in_sync
    if total == 1:
        return make_dataset(None)

    def for_worker(context):
        here = total // context.num_input_pipelines
        return make_dataset((context.input_pipeline_id * here, here, total))

    return strategy.distribute_datasets_from_function(for_worker)
