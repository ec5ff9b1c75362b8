"""The seed's recipe, the default of every model without one of its own (cifar.models): Adam,
cross-entropy, a per-epoch learning-rate decay, ReduceLROnPlateau and EarlyStopping; and
`compile_for`, which compiles a model with any recipe.

Learning rate. The seed combined LearningRateScheduler(lambda e: 1e-3 * 0.95**e) with
ReduceLROnPlateau(val_loss, factor 0.5, patience 5). A schedule of the epoch alone overwrites
each plateau cut at the next epoch. Here the scheduler multiplies the optimizer's *current* rate
by the decay each epoch: with no cut that is exactly 1e-3 * 0.95**epoch, and after a cut the
decay continues from the cut rate, so both take effect.
"""

from __future__ import annotations

import keras

from cifar.models import Recipe


def decay_schedule(decay):
    """LearningRateScheduler function: keep the rate at epoch 0, then multiply by `decay`."""

    def schedule(epoch, lr):
        return float(lr) if epoch == 0 else float(lr) * decay

    return schedule


def seed(train_cfg, steps_per_epoch):
    """The seed's recipe for `train_cfg` (shared.train): Adam, cross-entropy (label-smoothed if
    the settings say so), the per-epoch decay, ReduceLROnPlateau and EarlyStopping (their
    counters are replayed after a resume)."""
    early = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=train_cfg["early_stopping_patience"],
        restore_best_weights=True,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=train_cfg["plateau_factor"],
        patience=train_cfg["plateau_patience"],
    )
    scheduler = keras.callbacks.LearningRateScheduler(decay_schedule(train_cfg["lr_decay"]))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg.get("label_smoothing", 0.0))
    return Recipe(keras.optimizers.Adam(learning_rate=train_cfg["learning_rate"]), loss,
                  [scheduler, plateau, early], [plateau, early])


def compile_for(model, train_cfg, steps_per_epoch, recipe=None):
    """Compile `model` with `recipe` (default: the seed's) and the recipe's execution settings:
    `steps_per_execution` (steps per call into the graph, default 1) and `jit_compile` (XLA:
    true, false, or auto, Keras' choice: off on a CPU, on where a GPU can take it). Returns the
    recipe's callbacks and those whose counters a resume replays. Call it in the strategy's scope."""
    made = (recipe or seed)(train_cfg, steps_per_epoch)
    model.compile(optimizer=made.optimizer, loss=made.loss, metrics=["accuracy"],
                  steps_per_execution=train_cfg.get("steps_per_execution", 1),
                  jit_compile=train_cfg.get("jit_compile", "auto"))
    if made.prepare:
        made.prepare(model)
    return made.callbacks, made.monitors
