"""One training loop for both models: the seed's compile settings and callbacks, resumable.

Learning rate. The seed combined LearningRateScheduler(lambda e: 1e-3 * 0.95**e) with
ReduceLROnPlateau(val_loss, factor 0.5, patience 5). A schedule of the epoch alone overwrites
each plateau cut at the next epoch. Here the scheduler multiplies the optimizer's *current* rate
by the decay each epoch: with no cut that is exactly 1e-3 * 0.95**epoch, and after a cut the
decay continues from the cut rate, so both take effect.

Resume. BackupAndRestore saves the weights, the optimizer (its learning rate included) and the
epoch after every epoch; a rerun of the stage continues from the last finished epoch. The
callbacks' own counters (best value, epochs waited) are not in that backup, so ResumeMonitors
replays the history CSV of the finished epochs into them. The resume state lives in its own
folder, outside the stage's DVC outputs (which DVC deletes before a rerun), and is removed once
training finishes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar import augment

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]


def decay_schedule(decay):
    """LearningRateScheduler function: keep the rate at epoch 0, then multiply by `decay`."""

    def schedule(epoch, lr):
        return float(lr) if epoch == 0 else float(lr) * decay

    return schedule


def make_strategy(name):
    """`default`: the current device. `mirrored`: MirroredStrategy over all GPUs, else all
    logical CPUs (so it can be tested on a CPU split into logical devices)."""
    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


class Throughput(keras.callbacks.Callback):
    """Seconds spent in the training phase of each epoch (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.train_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._start is not None:
            self.train_seconds.append(time.perf_counter() - self._start)
            self._start = None


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
                if cb.best is None or cb._is_improvement(value, cb.best):
                    cb.best, cb.wait = value, 0
                    if isinstance(cb, keras.callbacks.EarlyStopping):
                        cb.best_epoch = int(row["epoch"])
                else:
                    cb.wait = getattr(cb, "wait", 0) + 1
                    if isinstance(cb, keras.callbacks.ReduceLROnPlateau) and cb.wait >= cb.patience:
                        cb.wait = 0  # it cut the rate here; the cut is in the restored optimizer
        print(f"Resuming at epoch {start + 1}: replayed {len(rows)} finished epochs into the callbacks")


def read_history(path):
    """Rows of a Keras CSVLogger file as dicts of floats, column `learning_rate` named `lr`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{("lr" if k == "learning_rate" else k): float(v) for k, v in row.items()} for row in rows]


def _fingerprint(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_state_dir(state_dir, config):
    """Reuse the resume state only if it was made with the same settings; else start over."""
    state_dir = Path(state_dir)
    marker = state_dir / "config.sha256"
    fingerprint = _fingerprint(config)
    if state_dir.exists() and (not marker.is_file() or marker.read_text() != fingerprint):
        print(f"Discarding resume state in {state_dir}: it was made with other settings")
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    return state_dir


def fit(build_model, arrays, train_cfg, augment_cfg, seed, state_dir, extra_callbacks=()):
    """Compile and fit the model from `build_model()` on the prepared arrays.

    `extra_callbacks` run after the pipeline's own (TensorBoard, say).

    Returns (best_model_path, history_rows, summary). The best model (highest val_accuracy)
    is the ModelCheckpoint file in `state_dir`; the caller moves it into place.
    """
    keras.utils.set_random_seed(seed)
    state_dir = _prepare_state_dir(state_dir, {"train": train_cfg, "augment": augment_cfg, "seed": seed})
    best_path = state_dir / "best.keras"
    history_path = state_dir / "history.csv"

    strategy = make_strategy(train_cfg["distribute"])
    with strategy.scope():
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=train_cfg["learning_rate"]),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )

    y_train = keras.utils.to_categorical(arrays["y_train"], 10)
    y_val = keras.utils.to_categorical(arrays["y_val"], 10)
    batch = train_cfg["batch_size"]
    train_ds = augment.train_dataset(arrays["x_train"], y_train, batch, seed, augment_cfg, train_cfg["augment"])
    val_ds = augment.eval_dataset(arrays["x_val"], y_val, batch)

    early = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=train_cfg["early_stopping_patience"],
        restore_best_weights=True,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=train_cfg["plateau_factor"],
        patience=train_cfg["plateau_patience"],
    )
    checkpoint = keras.callbacks.ModelCheckpoint(best_path, monitor="val_accuracy", mode="max", save_best_only=True)
    throughput = Throughput()
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        throughput,
        keras.callbacks.LearningRateScheduler(decay_schedule(train_cfg["lr_decay"])),
        plateau,
        early,
        checkpoint,
        keras.callbacks.CSVLogger(history_path, append=True),
        ResumeMonitors(history_path, [plateau, early, checkpoint]),
        # Last, so the backup holds the learning rate after this epoch's plateau cut.
        keras.callbacks.BackupAndRestore(state_dir / "backup"),
        *extra_callbacks,
    ]
    # Build before fit: BackupAndRestore restores into a built model.
    model.build((None, 32, 32, 3))

    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=train_cfg["epochs"],
        callbacks=callbacks,
        shuffle=False,  # the dataset is already shuffled, with its own seed
        verbose=1 if sys.stdout.isatty() else 2,
    )
    wall = time.perf_counter() - start
    if not best_path.is_file():
        raise RuntimeError("training produced no checkpoint: val_accuracy was never finite (NaN loss?)")

    rows = read_history(history_path)
    best = max(rows, key=lambda r: r["val_accuracy"])
    # The first timed epoch includes graph tracing; the median of the rest is the steady rate.
    steady = throughput.train_seconds[1:] or throughput.train_seconds
    summary = {
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": int(best["epoch"]) + 1,
        "epochs_run": len(rows),
        "final_lr": rows[-1]["lr"],
        "wall_time_s": round(wall, 1),
        "train_img_per_s": round(len(arrays["x_train"]) / statistics.median(steady), 1) if steady else None,
        "train_images": int(len(arrays["x_train"])),
        "val_images": int(len(arrays["x_val"])),
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "devices": strategy.num_replicas_in_sync,
    }
    return best_path, rows, summary


def write_history(rows, path):
    """The per-epoch history as CSV with 1-based epochs and the columns in HISTORY_COLUMNS."""
    from cifar.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "epoch": int(row["epoch"]) + 1})


def run_stage(name, build_model, args, cfg, provenance):
    """What train_cnn and finetune_mobilenet share: load data, fit, write the declared outputs.

    `args` has data, model, history, metrics and state paths (from dvc.yaml); `cfg` the
    validated `shared` params; `provenance` the inputs the metrics should name (weights...).
    """
    from cifar import data, outputs

    arrays = data.load_prepared(args.data)
    best_path, rows, summary = fit(
        build_model, arrays, cfg["train"], cfg["augment"], cfg["seed"], args.state / name
    )
    write_history(rows, args.history)
    with outputs.atomic_path(args.model) as tmp:
        shutil.copyfile(best_path, tmp)
    outputs.write_json(args.metrics, {
        name: summary,
        "data": {"archive_sha256": str(arrays["archive_sha256"])},
        **provenance,
        "environment": outputs.hardware(),
    })
    shutil.rmtree(args.state / name, ignore_errors=True)
    print(
        f"{name}: best val accuracy {summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']}, "
        f"{summary['epochs_run']} epochs in {summary['wall_time_s']:.0f} s, "
        f"{summary['train_img_per_s']} training img/s"
    )


def stage_arguments(description):
    """The command line both training stages take (paths come from dvc.yaml)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, type=Path, help="prepared arrays (.npz) from `prepare`")
    parser.add_argument("--model", required=True, type=Path, help="where the best model (.keras) goes")
    parser.add_argument("--history", required=True, type=Path, help="per-epoch history CSV")
    parser.add_argument("--metrics", required=True, type=Path, help="training metrics JSON")
    parser.add_argument("--state", required=True, type=Path,
                        help="folder for the resume state (kept only while training is unfinished)")
    return parser
