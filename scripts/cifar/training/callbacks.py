"""The callbacks every recipe's fit runs: epoch times, the best validated checkpoint, per-epoch
random seeds, and the replay of the finished epochs into the monitoring callbacks after a
resume (Keras' BackupAndRestore restores weights, optimizer and epoch, not their counters)."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import keras
import numpy as np
from dvclive.keras import DVCLiveCallback


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


def improved(monitor, value, best):
    """Whether `value` improves on `best` for the EarlyStopping or ReduceLROnPlateau `monitor`, by
    its public settings: `mode` (min or max; the recipes set it) and `min_delta`, as Keras reads
    them. tests/test_training.py checks it against each callback's own decision, epoch by epoch."""
    if monitor.mode not in ("min", "max"):
        raise ValueError(f"{type(monitor).__name__}({monitor.monitor}) needs mode='min' or 'max' to be replayed")
    delta = abs(monitor.min_delta)
    return value > best + delta if monitor.mode == "max" else value < best - delta


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
    """Rows of a Keras CSVLogger file as dicts of floats, column `learning_rate` named `lr`; a value
    Keras wrote as NA (no validation that epoch) is NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{("lr" if k == "learning_rate" else k): float("nan" if v in ("NA", "") else v) for k, v in row.items()}
            for row in rows]


class LiveLog(DVCLiveCallback):
    """DVCLive's Keras callback, logging each epoch's metrics into the stage's DVCLive folder
    (`dvc exp show` and VS Code's DVC extension show them while `dvc exp run` runs; the folder's
    plots are the per-model training curves `dvc plots diff` draws).

    A run's log is built whole on every attempt: `replay(rows)` logs the finished epochs of a
    resumed run (from the resume state's history) before training continues, so a resumed run's
    files are those of an uninterrupted one. Metrics are logged in sorted order, as CSVLogger
    writes them, and an epoch without validation logs no val metrics. The stage ends the log
    (`live.end()`) once every phase of its recipe has run; a phase's end does not."""

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
