"""The callbacks every fit runs: epoch times, the best validated checkpoint, per-epoch seeds, the
replay of finished epochs into the monitors after a resume, and DVCLive's log, the run's one
record (`read_history` reads its TSV files back; `cut_history` drops the epochs a resume redoes)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
from dvclive.keras import DVCLiveCallback

from cifar.outputs import StageError


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
    """After a resume, replays the finished epochs' `rows` into the monitoring callbacks (best,
    wait, the plateau's reset after a cut): BackupAndRestore restores weights, not their counters."""

    def __init__(self, rows, monitors):
        super().__init__()
        self.rows, self.monitors = rows, monitors

    def on_train_begin(self, logs=None):
        for cb in self.monitors:
            for row in self.rows:
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
        if self.rows:
            print(f"Resuming at epoch {len(self.rows) + 1}: replayed {len(self.rows)} finished epochs into the callbacks")


def read_history(folder, stage="train@NAME"):
    """Per-epoch rows (epoch from 1; loss, accuracy, lr, train_s, epoch_s, val_loss, val_accuracy: NaN
    without validation) from a DVCLive folder's TSV files; an error names the folder and its stage."""
    metrics = Path(folder) / "plots" / "metrics"
    series = {}
    try:
        for tsv in sorted(metrics.rglob("*.tsv")):
            kind, metric = tsv.relative_to(metrics).with_suffix("").as_posix().split("/", 1)
            key = "lr" if metric == "learning_rate" else ("val_" if kind == "eval" else "") + metric
            with open(tsv, newline="") as f:
                series[key] = {int(row["step"]): float(row[metric]) for row in csv.DictReader(f, delimiter="\t")}
    except (KeyError, ValueError, TypeError, csv.Error) as err:
        raise StageError(f"{metrics} is not a DVCLive log ({type(err).__name__}: {err}); it is written by the "
                         f"'{stage}' stage: run `dvc repro --force {stage}`") from None
    if not series.get("loss"):
        raise StageError(f"{metrics} has no epochs; it is written by the '{stage}' stage: run `dvc repro {stage}`")
    return [{"epoch": step + 1, **{key: values.get(step, math.nan) for key, values in series.items()}}
            for step in sorted(series["loss"])]


def cut_history(folder, steps):
    """Keep the first `steps` steps of the DVCLive folder (none: the folder goes)."""
    folder = Path(folder)
    if not steps:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for tsv in (folder / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            header, *rows = list(csv.reader(f, delimiter="\t"))
        step = header.index("step")
        kept = [row for row in rows if len(row) == len(header) and row[step].isdigit() and int(row[step]) < steps]
        with open(tsv, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator=os.linesep).writerows([header, *kept])


class LiveLog(DVCLiveCallback):
    """DVCLive's Keras callback, logging each epoch into `live` (the stage's folder: `dvc exp show`
    follows it) and then copying the folder into `mirror` (the resume state's copy: DVC removes the
    stage's outputs before it reruns the stage), file by file, each replaced whole."""

    def __init__(self, live, mirror=None):
        super().__init__(live=live)
        self.mirror = mirror

    def on_epoch_end(self, epoch, logs=None):
        for key, value in sorted((logs or {}).items()):  # an epoch without validation has no val_ values
            self.live.log_metric(key.replace("val_", "eval/", 1) if key.startswith("val_") else f"train/{key}",
                                 float(value))
        self.live.next_step()
        source = Path(self.live.dir)
        for path in (p for p in source.rglob("*") if p.is_file()) if self.mirror else ():
            copy = Path(self.mirror) / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, f"{copy}.part")
            os.replace(f"{copy}.part", copy)
