"""The seed's recipe, the default of a model without its own: Adam, cross-entropy, a per-epoch
decay, ReduceLROnPlateau and EarlyStopping; and `compile_for`, which compiles with any recipe.

The scheduler multiplies the *current* rate by the decay each epoch: without a plateau cut that
is the seed's 1e-3 * 0.95**epoch, and after one the decay continues from the cut rate (the
seed's schedule of the epoch alone overwrote each cut)."""

from __future__ import annotations

import keras

from cifar.models import Recipe


def decay_schedule(decay):
    def schedule(epoch, lr):
        return float(lr) if epoch == 0 else float(lr) * decay

    return schedule


def seed(train_cfg, steps_per_epoch):
    """The seed's recipe for `train_cfg` (a model's `train`); the plateau and early-stopping counters are replayed on resume."""
    early = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=train_cfg["early_stopping_patience"],
        restore_best_weights=True,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=train_cfg["plateau_factor"],
        patience=train_cfg["plateau_patience"],
    )
    scheduler = keras.callbacks.LearningRateScheduler(decay_schedule(train_cfg["lr_decay"]))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"])
    return Recipe(keras.optimizers.Adam(learning_rate=train_cfg["learning_rate"]), loss,
                  [scheduler, plateau, early], [plateau, early])


def compile_for(model, train_cfg, steps_per_epoch, recipe=None):
    """Compile `model` with `recipe` (default the seed's), `steps_per_execution` and `jit_compile`;
    return its callbacks and monitors. Call it in the strategy's scope."""
    made = (recipe or seed)(train_cfg, steps_per_epoch)
    model.compile(optimizer=made.optimizer, loss=made.loss, metrics=["accuracy"],
                  steps_per_execution=train_cfg["steps_per_execution"], jit_compile=train_cfg["jit_compile"])
    if made.prepare:
        made.prepare(model)
    return made.callbacks, made.monitors
