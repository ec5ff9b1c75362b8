"""The fit: one resumable training loop for every model, with its recipe. BackupAndRestore restores
weights, optimizer and epoch; ResumeMonitors replays the callbacks' counters; every draw of an
epoch is a function of (seed, epoch), so a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live

from cifar import augment
from cifar.outputs import StageError
from cifar.training import callbacks as cb
from cifar.training import distribute, precision as precisions, recipe as recipes
from cifar.training.resume import ResumeState, digest



class TrainingError(StageError, RuntimeError):
    """Training could not produce a model (a NaN loss from the first epoch on, say)."""


def nested_layers(layer):
    """`layer` and every layer inside it."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from nested_layers(inner)


# BatchNormalization's moving statistics must follow the weights within an epoch: their time
# constant, 1 / (1 - momentum) steps, is at most 1 / BN_STEPS_PER_AVERAGE of an epoch's steps.
# Keras' default momentum (0.99: 100 steps) already does so on CIFAR-10 (625 steps an epoch, so its
# models are unchanged); on a folder of a few hundred images (13 steps an epoch) it does not, and
# the saved seed CNN classified most images as one class. 2 was chosen on val among 1, 2 and 5
# (studies/small_folder/).
BN_STEPS_PER_AVERAGE = 2


def track_in_epoch(model, steps_per_epoch, per_epoch=None):
    """Lower each trainable BatchNormalization's momentum so its average spans at most
    1/`per_epoch` of an epoch (never raise it)."""
    per_epoch = BN_STEPS_PER_AVERAGE if per_epoch is None else per_epoch
    ceiling = max(0.0, 1.0 - per_epoch / steps_per_epoch)
    for layer in nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.momentum > ceiling:
            layer.momentum = ceiling


def class_weights(labels, classes, how):
    """Keras' class_weight: None for "none", scikit-learn's balanced weights for "balanced"."""
    if how == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=labels)))
    return {c: float(weights.get(c, 1.0)) for c in range(classes)}


def fit(build_model, arrays, train_cfg, augment_cfg, seed, state_dir, extra_callbacks=(), identity=None,
        strategy=None, recipe=None, live=None, first_step=0):
    """Compile and fit `build_model()`: (best model path, history rows, summary).

    `identity`: what else determines the run (params, code, weights); a resume continues only when
    all of it matches. `strategy`: made by the caller before other TensorFlow work. `recipe`: the
    model's (default the seed's). `live`: the stage's DVCLive folder, on the chief, its epochs
    logged from step `first_step` (after the phases before); else the state's own. With several
    workers the chief keeps the state; the others take it over at start and keep theirs in a
    temporary folder."""
    if strategy is None:
        strategy = distribute.make_strategy(train_cfg["distribute"])
    chief, task = distribute.worker_role(strategy)
    if chief:
        return _fit(build_model, arrays, train_cfg, augment_cfg, seed, Path(state_dir), extra_callbacks, identity,
                    strategy, task, recipe, live, first_step)
    with tempfile.TemporaryDirectory(prefix=f"cifar10-{task}-") as scratch:
        _, rows, summary = _fit(build_model, arrays, train_cfg, augment_cfg, seed, Path(scratch) / "state",
                                extra_callbacks, identity, strategy, task, recipe, None, first_step)
    return None, rows, summary


def _fit(build_model, arrays, train_cfg, augment_cfg, seed, state_dir, extra_callbacks, identity, strategy, task,
         recipe, live, first_step):
    """fit()'s body: Keras' fit takes its whole set-up at once."""
    chief = task is None or distribute.worker_role(strategy)[0]
    data_digest = digest(arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"])
    state = ResumeState(state_dir, {"train": train_cfg, "augment": augment_cfg, "seed": seed,
                                    "data": data_digest, **(identity or {})})
    if chief:
        done = state.finished()
        first_epoch = None if done else state.start_epoch()
    if task:  # several workers: the chief's state is everyone's
        received = distribute.bytes_from_chief(strategy, state.pack() if chief else b"", chief)
        if not chief:
            state.unpack(received, task)
            done = state.finished(need_model=False)
            first_epoch = None if done else state.start_epoch()
    log = Path(live) if live else state.live
    if live and state.live.is_dir():  # the state's copy of the log: DVC removed the stage's before rerunning it
        shutil.rmtree(log, ignore_errors=True)
        shutil.copytree(state.live, log)
    if done:
        print(f"Training finished in an earlier attempt whose outputs were not written; reusing {state.folder}")
        return state.best, *done
    cb.cut_history(log, first_step + first_epoch)
    finished = phase_rows(log, first_step) if first_epoch else []
    if len(finished) < first_epoch:
        print(f"The training log {log} lacks epochs the backup in {state.folder} has; training from the start")
        first_epoch, finished = state.restart(), []
        cb.cut_history(log, first_step)
    live_log = cb.LiveLog(Live(str(log), resume=True, save_dvc_exp=False, dvcyaml=None),
                          mirror=state.live if live else None)
    live_log.live.step = first_step + first_epoch

    keras.utils.set_random_seed(seed)
    batch, epochs = train_cfg["batch_size"], train_cfg["epochs"]
    drop = train_cfg["drop_last"]
    steps = augment.steps_per_epoch(len(arrays["y_train"]), batch, drop)
    if batch < strategy.num_replicas_in_sync:
        raise StageError(f"batch_size {batch} is smaller than the {strategy.num_replicas_in_sync} replicas it is split "
                         "between; raise it (it is the global batch)")
    policy, feature, note = precisions.resolve(train_cfg["precision"])
    if note:
        print(f"precision: {note}", flush=True)
    keras.mixed_precision.set_global_policy(policy)  # the model is built in it; float32 again below
    with strategy.scope():
        model = build_model()
        track_in_epoch(model, steps)
        if strategy.num_replicas_in_sync > 1:
            # Normalise by the statistics of the global batch, as one process would, not by
            # each replica's share of it.
            for layer in nested_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        recipe_callbacks, monitors = recipes.compile_for(model, train_cfg, steps, recipe)
    if task:  # every worker starts from the chief's weights (a phase's model is built on the chief only)
        distribute.weights_from_chief(strategy, model, chief)

    classes = model.output_shape[-1]  # one probability per class of the data it was built for
    y_train = keras.utils.to_categorical(arrays["y_train"], classes)
    y_val = keras.utils.to_categorical(arrays["y_val"], classes)
    train_ds = distribute.distributed_train_dataset(strategy, lambda replicas: augment.train_dataset(
        arrays["x_train"], y_train, batch, seed, augment_cfg, train_cfg["augment"], epochs=epochs,
        first_epoch=min(first_epoch, epochs), drop_remainder=drop, replicas=replicas))
    val_ds = augment.eval_dataset(arrays["x_val"], y_val, batch)

    checkpoint = cb.BestValidatedCheckpoint(state.best, monitor="val_accuracy", mode="max", save_best_only=True)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        cb.EpochSeeds(seed),
        cb.EpochTimes(),
        *recipe_callbacks,
        checkpoint,
        live_log,
        cb.ResumeMonitors(finished, [*monitors, checkpoint]),
        # Last, so the backup holds the learning rate after this epoch's plateau cut.
        # double_checkpoint: a kill while the backup is written leaves the previous one usable.
        keras.callbacks.BackupAndRestore(state.backup, double_checkpoint=True),
        *extra_callbacks,
    ]
    # Build before fit: BackupAndRestore restores into a built model.
    model.build((None, *arrays["x_train"].shape[1:]))
    # The seed's recipe validates every epoch (its callbacks watch val metrics); a recipe with
    # `validate_every` N validates every Nth epoch and the last (test-time augmentation makes a
    # validation pass cost a third of a training epoch).
    every = train_cfg["validate_every"]
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            validation_freq=sorted({*range(every, epochs + 1, every), epochs}),
            epochs=epochs,
            steps_per_epoch=steps,
            class_weight=class_weights(arrays["y_train"], classes, train_cfg["class_weight"]),
            callbacks=callbacks,
            shuffle=False,  # the stream is already shuffled, per (seed, epoch)
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except tf.errors.UnavailableError as err:  # multi_worker: a peer died; collectives were aborted
        raise TrainingError(
            f"a worker of the cluster stopped answering ({err.message.splitlines()[0]}); start every worker "
            "again with the same command: training continues from the last finished epoch") from None
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rows = phase_rows(log, first_step)
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
        "steps_per_execution": train_cfg["steps_per_execution"],
        "jit_compile": bool(model.jit_compile),
        "precision": policy,             # what it trained in
        "precision_feature": feature,    # the hardware feature behind it
        **({"precision_note": note} if note else {}),
    }
    nan = [int(r["epoch"]) + 1 for r in rows if not np.isfinite(r["loss"])]
    if nan:  # TerminateOnNaN stopped the run: the caller decides whether the checkpoint may stand
        summary["nan_epoch"] = nan[0]
    state.finish(rows, summary)
    return state.best, rows, summary


def phase_rows(log, first_step):
    """The DVCLive log's rows from step `first_step` on, epochs counted from 0 ([] without any)."""
    try:
        rows = cb.read_history(log)[first_step:]
    except StageError:
        return []
    return [{**row, "epoch": epoch} for epoch, row in enumerate(rows)]


def combine_phases(summaries):
    """One summary for phases [(name, summary)]: the last phase's model; epochs and times summed."""
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
