"""The callbacks every fit runs: epoch times, the best validated checkpoint, per-epoch seeds, the
replay of finished epochs into the monitors after a resume, and DVCLive's log."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import keras
import numpy as np
from dvclive.keras import DVCLiveCallback


class EpochTimes(keras.callbacks.Callback):
    """Adds `train_s`, `epoch_s` and the epoch-end learning rate to the epoch's logs."""

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
    """ModelCheckpoint(save_best_only) that skips epochs without validation (Keras 3 saves when the
    monitored value is missing, and a NaN best is never beaten), written as a partial file renamed
    into place."""

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
    """An epoch without validation logs NaN val metrics (after the checkpoint and monitors ran)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for key in ("val_loss", "val_accuracy"):
                logs.setdefault(key, float("nan"))


class EpochSeeds(keras.callbacks.Callback):
    """Sets every seed-generator state (Dropout's) from (seed, epoch) at each epoch's start."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        values = np.random.default_rng([self.seed, epoch, 2]).integers(0, 2**31 - 1, len(states))
        for state, value in zip(states, values):
            state.assign(np.array([value, 0], dtype=state.dtype))


def improved(monitor, value, best):
    """Whether `value` improves on `best` by the monitor's `mode` and `min_delta`, as Keras decides
    (tests/test_training.py checks it against the callbacks)."""
    if monitor.mode not in ("min", "max"):
        raise ValueError(f"{type(monitor).__name__}({monitor.monitor}) needs mode='min' or 'max' to be replayed")
    delta = abs(monitor.min_delta)
    return value > best + delta if monitor.mode == "max" else value < best - delta


class ResumeMonitors(keras.callbacks.Callback):
    """After a resume, replays the finished epochs' history into the monitoring callbacks (best,
    wait, the plateau's reset after a cut): BackupAndRestore restores weights, not their counters."""

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
            for row in rows:
                value = row[cb.monitor]
                if not np.isfinite(value):  # an epoch without validation: nothing to compare
                    continue
                if cb.best is None or improved(cb, value, cb.best):
                    cb.best, cb.wait = value, 0
                    if isinstance(cb, keras.callbacks.EarlyStopping):
                        cb.best_epoch = int(row["epoch"])
                else:
                    cb.wait = getattr(cb, "wait", 0) + 1
                    if isinstance(cb, keras.callbacks.ReduceLROnPlateau) and cb.wait >= cb.patience:
                        cb.wait = 0  # it cut the rate here; the cut is in the restored optimizer
        print(f"Resuming at epoch {start + 1}: replayed {len(rows)} finished epochs into the callbacks")


def read_history(path):
    """A CSVLogger file's rows as floats (`learning_rate` named `lr`, NA as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{("lr" if k == "learning_rate" else k): float("nan" if v in ("NA", "") else v) for k, v in row.items()}
            for row in rows]


class LiveLog(DVCLiveCallback):
    """DVCLive's Keras callback logging each epoch into the stage's DVCLive folder (`dvc exp show`
    follows it); `replay(rows)` logs a resumed run's finished epochs first, so its files are an
    uninterrupted run's. The stage ends the log after the last phase."""

    def __init__(self, live):
        super().__init__(live=live)

    def log(self, values):
        for key in sorted(values):
            value = values[key]
            if key != "epoch" and np.isfinite(value):
                self.live.log_metric(key.replace("val_", "eval/", 1) if key.startswith("val_") else f"train/{key}",
                                     float(value))
        self.live.next_step()

    def replay(self, rows):
        for row in rows:
            self.log({("learning_rate" if k == "lr" else k): v for k, v in row.items()})

    def on_epoch_end(self, epoch, logs=None):
        self.log(logs or {})

    def on_train_end(self, logs=None):
        pass
