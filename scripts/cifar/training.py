"""The fit library: one resumable training loop for every model, with the recipe its params name
(`recipe`): the seed's (Adam, its callbacks) or airbench's (SGD-Nesterov, lookahead, ...).

Learning rate. The seed combined LearningRateScheduler(lambda e: 1e-3 * 0.95**e) with
ReduceLROnPlateau(val_loss, factor 0.5, patience 5). A schedule of the epoch alone overwrites
each plateau cut at the next epoch. Here the scheduler multiplies the optimizer's *current* rate
by the decay each epoch: with no cut that is exactly 1e-3 * 0.95**epoch, and after a cut the
decay continues from the cut rate, so both take effect.

Resume. BackupAndRestore saves the weights, the optimizer (its learning rate included) and the
epoch after every epoch; a rerun continues from the last finished epoch. The callbacks' own
counters (best value, epochs waited) are not in that backup, so ResumeMonitors replays the
history CSV of the finished epochs into them. Every random draw of an epoch (image order,
augmentation, dropout) is a function of (seed, epoch), so a resumed run repeats what an
uninterrupted one does. The state folder is stamped with everything that determines the run
(settings, data, code, pretrained weights: `identity`); state made by anything else is
discarded, never continued. A run that finished but whose outputs were not written is reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar import augment
from cifar.data import IMAGE_SHAPE, NUM_CLASSES
from cifar.outputs import StageError

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]


def decay_schedule(decay):
    """LearningRateScheduler function: keep the rate at epoch 0, then multiply by `decay`."""

    def schedule(epoch, lr):
        return float(lr) if epoch == 0 else float(lr) * decay

    return schedule


def configure_devices():
    """Let every GPU's memory grow as needed instead of taking it all at start, so that two
    processes (the multi-worker test, a training beside a notebook) can share one device. Call
    it before any other TensorFlow work: it cannot change a device already in use."""
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
    """The machine's own word that it has an NVIDIA GPU (nvidia-smi -L's first line, or the
    device file), whether or not TensorFlow can use it; None without one."""
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
    """(what trains: e.g. "GPU:0 (NVIDIA H200)" or "CPU (2 cores)", its precision, and a warning
    when the machine has an NVIDIA GPU that TensorFlow does not see, else None)."""
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
        "TensorFlow's GPU build with `make setup GPU=1` (README: Training on a GPU)")
    return where, precision, warning


def make_strategy(name):
    """`default`: the current device. `mirrored`: MirroredStrategy over all GPUs, else all
    logical CPUs (so it can be tested on a CPU split into logical devices). `multi_worker`:
    MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (every worker runs the same
    command; each worker's GPUs, or its CPU, are its replicas). Make it before any other
    TensorFlow work: the multi-worker strategy must configure the runtime first."""
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
    (keras-team/keras#20585): a nested (images, labels) batch in one call, reduced one tensor at
    a time as MirroredStrategy does; and scalar logs with axis=0, reduced across replicas."""

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
                         f"TF_CONFIG='{example}' (index 0 on the first host, 1 on the second; README: Training on a cluster)")
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
    """(is this process the chief, its task name such as "worker-1", or None for a run of one
    process): the chief writes the outputs, the other workers nothing."""
    resolver = getattr(strategy, "cluster_resolver", None)
    kind = getattr(resolver, "task_type", None)
    if not kind:
        return True, None
    index = resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief), f"{kind}-{index}"


def from_chief(strategy, values):
    """The int64 array `values` as the chief holds it, on every worker: a cross-worker sum to
    which only the chief's first replica adds anything (the others pass zeros of the same shape)."""
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
    """`make_dataset(replicas)` for `strategy`: one stream per worker feeding its replicas their
    shares of each global batch (`augment.train_dataset`'s `replicas`), or the plain stream
    with one replica."""
    total = strategy.num_replicas_in_sync
    if total == 1:
        return make_dataset(None)

    def for_worker(context):
        here = total // context.num_input_pipelines
        return make_dataset((context.input_pipeline_id * here, here, total))

    return strategy.distribute_datasets_from_function(for_worker)


class TrainingError(StageError, RuntimeError):
    """Training could not produce a model (a NaN loss from the first epoch on, say)."""


class EpochTimes(keras.callbacks.Callback):
    """Adds the epoch's seconds to its logs, so the history CSV keeps them across resumes:
    `train_s` (training phase only) and `epoch_s` (with validation); and the learning rate at the
    epoch's end, where no LearningRateScheduler logs it (a per-step schedule)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._train is None:
            self._train = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            total = time.perf_counter() - self._start
            logs["train_s"] = self._train if self._train is not None else total
            logs["epoch_s"] = total
            logs.setdefault("learning_rate", float(np.asarray(self.model.optimizer.learning_rate)))


class BestValidatedCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint(save_best_only) that leaves out epochs without validation (`validate_every`
    > 1). Keras 3 saves when the monitored value is missing, and a NaN best is never beaten:
    either way the model kept was not the best validated one (the fast model's first full run
    kept its first epoch's)."""

    def __init__(self, filepath, **kwargs):
        # Keras writes the file in place; a kill during the write would leave a truncated best
        # model. It writes a partial file instead, renamed over `filepath` once complete.
        self.final = Path(filepath)
        super().__init__(str(self.final.with_name(self.final.stem + ".partial.keras")), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        super().on_epoch_end(epoch, logs)
        partial = Path(self.filepath)
        if partial.is_file():
            os.replace(partial, self.final)


class UnvalidatedAsNaN(keras.callbacks.Callback):
    """An epoch without validation (`validate_every` > 1) gets NaN val_loss and val_accuracy, so
    the history CSV keeps its columns. It runs after the checkpoint and the monitors: to them such
    an epoch has no val metrics."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for key in ("val_loss", "val_accuracy"):
                logs.setdefault(key, float("nan"))


class EpochSeeds(keras.callbacks.Callback):
    """Sets every random-number state of the model (Dropout's, say) from (seed, epoch) at the
    start of each epoch, so the draws of epoch k do not depend on the epochs run before it in
    this process."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        values = np.random.default_rng([self.seed, epoch, 2]).integers(0, 2**31 - 1, len(states))
        for state, value in zip(states, values):
            state.assign(np.array([value, 0], dtype=state.dtype))


class ResumeMonitors(keras.callbacks.Callback):
    """After a resume, replay the finished epochs' history into the monitoring callbacks.

    Runs at the first epoch, after every on_train_begin (BackupAndRestore's sets the start
    epoch; the monitors' reset themselves), and repeats their bookkeeping: best value so far,
    epochs waited, and the plateau callback's reset after a cut.
    """

    def __init__(self, history_path, monitors):
        super().__init__()
        self.history_path = Path(history_path)
        self.monitors = monitors
        self._replayed = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._replayed:
            return
        self._replayed = True
        if not epoch or not self.history_path.is_file():
            return
        start = epoch
        rows = read_history(self.history_path)[:start]
        for cb in self.monitors:
            if cb.monitor_op is None:
                cb._set_monitor_op()
            for row in rows:
                value = row[cb.monitor]
                if not np.isfinite(value):  # an epoch without validation: nothing to compare
                    continue
                if cb.best is None or cb._is_improvement(value, cb.best):
                    cb.best, cb.wait = value, 0
                    if isinstance(cb, keras.callbacks.EarlyStopping):
                        cb.best_epoch = int(row["epoch"])
                else:
                    cb.wait = getattr(cb, "wait", 0) + 1
                    if isinstance(cb, keras.callbacks.ReduceLROnPlateau) and cb.wait >= cb.patience:
                        cb.wait = 0  # it cut the rate here; the cut is in the restored optimizer
        print(f"Resuming at epoch {start + 1}: replayed {len(rows)} finished epochs into the callbacks")


def recipe(train_cfg, steps_per_epoch):
    """(optimizer, loss, the recipe's callbacks, those of them whose counters a resume replays)
    for `train_cfg`.

    `adam` is the seed's: Adam, cross-entropy (label-smoothed if the settings say so), the
    per-epoch decay, ReduceLROnPlateau and EarlyStopping (their counters are replayed after a
    resume). `sgd_nesterov` is airbench's: SGD
    with Nesterov momentum on a warm-up/decay schedule per step, label smoothing, a higher learning
    rate for biases, coupled L2 weight decay and lookahead (inside the optimizer: no callback).
    """
    if train_cfg.get("optimizer", "adam") == "adam":
        early = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=train_cfg["early_stopping_patience"],
            restore_best_weights=True,
        )
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", mode="min", factor=train_cfg["plateau_factor"],
            patience=train_cfg["plateau_patience"],
        )
        callbacks = [keras.callbacks.LearningRateScheduler(decay_schedule(train_cfg["lr_decay"])), plateau, early]
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg.get("label_smoothing", 0.0))
        return keras.optimizers.Adam(learning_rate=train_cfg["learning_rate"]), loss, callbacks, [plateau, early]
    from cifar.layers import BiasScaledSGD, WarmupDecay

    total = train_cfg["epochs"] * steps_per_epoch
    start, end = train_cfg["lr_start_end"]
    schedule = WarmupDecay(train_cfg["learning_rate"], total, round(train_cfg["warmup_fraction"] * total), start, end)
    optimizer = BiasScaledSGD(learning_rate=schedule, momentum=train_cfg["momentum"], nesterov=True,
                              bias_scale=train_cfg["bias_lr_scale"],
                              l2=train_cfg["weight_decay"] / train_cfg["learning_rate"],
                              lookahead_every=train_cfg["lookahead_every"],
                              lookahead_decay=train_cfg["lookahead_decay"], total_steps=total,
                              steps_per_epoch=steps_per_epoch)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"])
    return optimizer, loss, [], []


class StartLookahead(keras.callbacks.Callback):
    """Sets the optimizer's lookahead slow weights to the model's at the first epoch's start: after
    every on_train_begin, so after BackupAndRestore has restored a resumed run's weights (Keras
    calls on_train_begin in list order), and before the first step changes BatchNormalization's
    moving statistics. An epoch hook only: Keras still dispatches the steps without waiting."""

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self.model.optimizer.start_lookahead()


def compile_for(model, train_cfg, steps_per_epoch):
    """Compile `model` with its recipe (`recipe`) and the recipe's execution settings:
    `steps_per_execution` (steps per call into the graph, default 1) and `jit_compile` (XLA:
    true, false, or auto, Keras' choice: off on a CPU, on where a GPU can take it). Returns the
    recipe's callbacks and those whose counters a resume replays. Call it in the strategy's scope."""
    optimizer, loss, callbacks, monitors = recipe(train_cfg, steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"],
                  steps_per_execution=train_cfg.get("steps_per_execution", 1),
                  jit_compile=train_cfg.get("jit_compile", "auto"))
    if getattr(optimizer, "lookahead_every", 0):  # it averages every float weight, not only the trainable ones
        optimizer.watch(model.weights)
        optimizer.start_lookahead()  # a fit without the callback (bench) starts from these weights
        callbacks = [*callbacks, StartLookahead()]
    return callbacks, monitors


def read_history(path):
    """Rows of a Keras CSVLogger file as dicts of floats, column `learning_rate` named `lr`; a value
    Keras wrote as NA (no validation that epoch) is NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{("lr" if k == "learning_rate" else k): float("nan" if v in ("NA", "") else v) for k, v in row.items()}
            for row in rows]


def digest(*arrays):
    """sha256 of numpy arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _whole_zip(path):
    """Whether `path` is a complete zip file (a .keras model), every member's checksum intact."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class ResumeState:
    """The folder a training run keeps between attempts, stamped with what made it.

    identity.json holds everything that determines the run; state with another identity is
    discarded with a one-line message naming what changed. best.keras (the best epoch so far),
    history.csv (CSVLogger), backup/ (BackupAndRestore) and, once fit() has returned, result.json.
    """

    def __init__(self, folder, identity):
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.best = self.folder / "best.keras"
        self.history = self.folder / "history.csv"
        self.backup = self.folder / "backup"
        self.result = self.folder / "result.json"
        stamp = self.folder / "identity.json"
        if self.folder.exists():
            try:
                old = json.loads(stamp.read_text())
            except (OSError, ValueError):
                old = None
            if old != self.identity:
                print(f"Discarding resume state in {self.folder}: it was made with {self._changes(old)}")
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            stamp.write_text(json.dumps(self.identity, indent=1, sort_keys=True))

    def _changes(self, old):
        if not isinstance(old, dict):
            return "settings it did not record"
        before, now = _flatten(old), _flatten(self.identity)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        return f"other settings or inputs (changed: {shown})"

    def finished(self, need_model=True):
        """(history rows, summary) of a run that completed but whose outputs were not written."""
        if not self.result.is_file():
            return None
        if need_model and not _whole_zip(self.best):
            print(f"The finished run in {self.folder} left an incomplete best model; training again")
            return None
        done = json.loads(self.result.read_text())
        return done["rows"], done["summary"]

    def _backup_epoch(self):
        """The epoch BackupAndRestore will resume at, after making its files agree.

        It writes (with double_checkpoint) the previous weights and metadata to .bkp copies,
        then the new weights, then the new metadata; a kill can land between any two. Keras falls
        back to the .bkp files only when the weights will not load; unreadable metadata, or
        weights with no metadata, would resume at the wrong epoch. Those cases fall back to the
        .bkp pair here, or, with none, to a fresh start.
        """
        weights, meta = self.backup / "latest.weights.h5", self.backup / "training_metadata.json"
        saved_weights, saved_meta = Path(f"{weights}.bkp"), Path(f"{meta}.bkp")

        def epoch_in(path):
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                return None

        def readable(path):
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    f.visit(lambda name: None)
                return True
            except (OSError, ValueError, RuntimeError):
                return False

        epoch = epoch_in(meta)
        if epoch is not None and readable(weights):
            return epoch
        saved = epoch_in(saved_meta)
        if saved is not None and readable(saved_weights):
            shutil.copyfile(saved_weights, weights)
            shutil.copyfile(saved_meta, meta)
            return saved
        shutil.rmtree(self.backup, ignore_errors=True)
        return 0

    def start_epoch(self):
        """The first epoch still to run. Leftovers of an attempt that left no backup (killed in
        its first epoch, or after Keras removed the backup) are cleared so nothing is appended
        to them; a history longer than the backup (killed between the two writes) is cut."""
        epoch = self._backup_epoch() if self.backup.exists() else 0
        if epoch == 0:
            for leftover in (self.best, self.history, self.result):
                leftover.unlink(missing_ok=True)
        elif self.history.is_file():
            lines = self.history.read_text().splitlines(keepends=True)
            if len(lines) - 1 > epoch:
                self.history.write_text("".join(lines[: epoch + 1]))
        return epoch

    def pack(self):
        """The state as a tar archive (bytes), without the best model: what another worker needs
        to continue exactly where this one is."""
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(self.folder.rglob("*")):
                if path.is_file() and path != self.best:
                    tar.add(path, arcname=path.relative_to(self.folder).as_posix())
        return buffer.getvalue()

    def unpack(self, payload, who):
        """Replace this state with the chief's `pack()`, after checking that the chief's run is
        this one (same settings, data and code)."""
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
            theirs = json.loads(tar.extractfile("identity.json").read())
            if theirs != self.identity:
                before, now = _flatten(theirs), _flatten(self.identity)
                changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
                raise StageError(f"{who} runs another training than the chief (differs in: {', '.join(changed[:4])}); "
                                 "start every worker from the same commit, params.yaml and data")
            shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            tar.extractall(self.folder, filter="data")

    def finish(self, rows, summary):
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": rows, "summary": summary}))
        tmp.replace(self.result)


def fit(build_model, arrays, train_cfg, augment_cfg, seed, state_dir, extra_callbacks=(), identity=None,
        strategy=None):
    """Compile and fit the model from `build_model()` on the prepared arrays.

    `identity`: what else determines the run beyond the settings and arrays given here (the
    stage's other params, its code, the pretrained weights); resume state is only continued
    when all of it matches. `extra_callbacks` run after the pipeline's own (TensorBoard, say).
    `strategy`: made by the caller before any TensorFlow work (make_strategy), else here from
    train_cfg's `distribute`.

    Returns (best_model_path, history_rows, summary). The best model (highest val_accuracy)
    is the ModelCheckpoint file in `state_dir`; the caller moves it into place.

    Several workers (multi_worker): the chief keeps the resume state in `state_dir`; every other
    worker keeps its checkpoints in a temporary folder, removed when it returns (with
    best_model_path None), and at the start takes over the chief's state, so a restarted worker
    continues from the chief's last finished epoch with nothing of its own.
    """
    if strategy is None:
        strategy = make_strategy(train_cfg.get("distribute", "default"))
    chief, task = worker_role(strategy)
    if chief:
        return _fit(build_model, arrays, train_cfg, augment_cfg, seed, Path(state_dir), extra_callbacks, identity,
                    strategy, task)
    with tempfile.TemporaryDirectory(prefix=f"cifar10-{task}-") as scratch:
        _, rows, summary = _fit(build_model, arrays, train_cfg, augment_cfg, seed, Path(scratch) / "state",
                                extra_callbacks, identity, strategy, task)
    return None, rows, summary


def _fit(build_model, arrays, train_cfg, augment_cfg, seed, state_dir, extra_callbacks, identity, strategy, task):
    chief = task is None or worker_role(strategy)[0]
    data_digest = digest(arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"])
    state = ResumeState(state_dir, {"train": train_cfg, "augment": augment_cfg, "seed": seed,
                                    "data": data_digest, **(identity or {})})
    if chief:
        done = state.finished()
        first_epoch = None if done else state.start_epoch()
    if task:  # several workers: the chief's state is everyone's
        received = bytes_from_chief(strategy, state.pack() if chief else b"", chief)
        if not chief:
            state.unpack(received, task)
            done = state.finished(need_model=False)
            first_epoch = None if done else state.start_epoch()
    if done:
        print(f"Training finished in an earlier attempt whose outputs were not written; reusing {state.folder}")
        return state.best, *done

    keras.utils.set_random_seed(seed)
    batch, epochs = train_cfg["batch_size"], train_cfg["epochs"]
    drop = train_cfg.get("drop_last", False)
    steps = augment.steps_per_epoch(len(arrays["y_train"]), batch, drop)
    if batch < strategy.num_replicas_in_sync:
        raise StageError(f"batch_size {batch} is smaller than the {strategy.num_replicas_in_sync} replicas it is split "
                         "between; raise it (it is the global batch)")
    with strategy.scope():
        model = build_model()
        if strategy.num_replicas_in_sync > 1:
            # Normalise by the statistics of the global batch, as one process would, not by
            # each replica's share of it.
            for layer in model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        recipe_callbacks, monitors = compile_for(model, train_cfg, steps)
    if task:  # every worker starts from the chief's weights (a phase's model is built on the chief only)
        weights_from_chief(strategy, model, chief)

    y_train = keras.utils.to_categorical(arrays["y_train"], NUM_CLASSES)
    y_val = keras.utils.to_categorical(arrays["y_val"], NUM_CLASSES)
    train_ds = distributed_train_dataset(strategy, lambda replicas: augment.train_dataset(
        arrays["x_train"], y_train, batch, seed, augment_cfg, train_cfg.get("augment", True), epochs=epochs,
        first_epoch=min(first_epoch, epochs), drop_remainder=drop, replicas=replicas))
    val_ds = augment.eval_dataset(arrays["x_val"], y_val, batch)

    checkpoint = BestValidatedCheckpoint(state.best, monitor="val_accuracy", mode="max", save_best_only=True)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        EpochSeeds(seed),
        EpochTimes(),
        *recipe_callbacks,
        checkpoint,
        UnvalidatedAsNaN(),
        keras.callbacks.CSVLogger(state.history, append=True),
        ResumeMonitors(state.history, [*monitors, checkpoint]),
        # Last, so the backup holds the learning rate after this epoch's plateau cut.
        # double_checkpoint: a kill while the backup is written leaves the previous one usable.
        keras.callbacks.BackupAndRestore(state.backup, double_checkpoint=True),
        *extra_callbacks,
    ]
    # Build before fit: BackupAndRestore restores into a built model.
    model.build((None, *IMAGE_SHAPE))
    # The seed's recipe validates every epoch (its callbacks watch val metrics); a recipe with
    # `validate_every` N validates every Nth epoch and the last (test-time augmentation makes a
    # validation pass cost a third of a training epoch).
    every = train_cfg.get("validate_every", 1)
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            validation_freq=sorted({*range(every, epochs + 1, every), epochs}),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            shuffle=False,  # the stream is already shuffled, per (seed, epoch)
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except tf.errors.UnavailableError as err:  # multi_worker: a peer died; collectives were aborted
        raise TrainingError(
            f"a worker of the cluster stopped answering ({err.message.splitlines()[0]}); start every worker "
            "again with the same command: training continues from the last finished epoch") from None
    rows = read_history(state.history) if state.history.is_file() else []
    finite = [r for r in rows if np.isfinite(r["loss"]) and np.isfinite(r["val_loss"])]
    if not finite or (chief and not state.best.is_file()):  # other workers keep no model
        raise TrainingError(
            "training produced no model: no epoch ended with a finite loss (NaN from the first "
            "batches on); lower shared.train.learning_rate or check the data and the model's input scaling"
        )
    best = max(finite, key=lambda r: r["val_accuracy"])
    # An epoch after a (re)start includes graph tracing; the median is the steady rate.
    summary = {
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": int(best["epoch"]) + 1,
        "epochs_run": len(rows),
        "final_lr": rows[-1]["lr"],
        "wall_time_s": round(sum(r["epoch_s"] for r in rows), 1),
        "train_img_per_s": round(len(arrays["x_train"]) / statistics.median(r["train_s"] for r in rows), 1),
        "train_images": int(len(arrays["x_train"])),
        "val_images": int(len(arrays["x_val"])),
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "devices": strategy.num_replicas_in_sync,
        "steps_per_execution": int(train_cfg.get("steps_per_execution", 1)),
        "jit_compile": bool(model.jit_compile),
    }
    nan = [int(r["epoch"]) + 1 for r in rows if not np.isfinite(r["loss"])]
    if nan:  # TerminateOnNaN stopped the run: the caller decides whether the checkpoint may stand
        summary["nan_epoch"] = nan[0]
    state.finish(rows, summary)
    return state.best, rows, summary


def combine_phases(summaries):
    """One summary for a recipe in phases [(name, summary)]: the model is the last phase's best;
    epochs and times add up; each phase's own summary is kept under `phases`."""
    last = summaries[-1][1]
    before = sum(s["epochs_run"] for _, s in summaries[:-1])
    images = [s["epochs_run"] * s["train_images"] for _, s in summaries]
    training_s = sum(n / s["train_img_per_s"] for n, (_, s) in zip(images, summaries) if s["train_img_per_s"])
    return {
        **last,
        "best_epoch": before + last["best_epoch"],
        "epochs_run": before + last["epochs_run"],
        "wall_time_s": round(sum(s["wall_time_s"] for _, s in summaries), 1),
        "train_img_per_s": round(sum(images) / training_s, 1) if training_s else 0.0,
        "phases": {name: summary for name, summary in summaries},
    }


def write_history(rows, path):
    """The per-epoch history as CSV with 1-based epochs and the columns in HISTORY_COLUMNS."""
    from cifar.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "epoch": int(row["epoch"]) + 1})
