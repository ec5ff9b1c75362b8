"""Measuring a trained model, and the figures and tables that show it."""

from __future__ import annotations

import csv
import weakref

import numpy as np

_FORWARD = weakref.WeakKeyDictionary()  # each model's traced inference graph


def predict(model, images, batch_size=256):
    """A Keras model's float32 probabilities for raw 0-255 `images`, through one graph traced once
    per model for any batch size. Keras' model.predict builds a pipeline per call and may retrace a
    short last batch: on the robustness stage's 1,000-image sets it ran at half this rate."""
    import tensorflow as tf

    forward = _FORWARD.get(model)
    if forward is None:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        forward = _FORWARD[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    parts = [forward(tf.cast(images[i:i + batch_size], tf.float32)).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, model.output_shape[-1]), np.float32)


def loss_and_accuracy(model, x, y, batch_size):
    """Plain cross-entropy and accuracy on integer labels `y`: not the compiled loss, so a model
    trained with label smoothing is measured as the others."""
    return loss_and_accuracy_of(predict(model, x, batch_size), y)


def loss_and_accuracy_of(probabilities, y):
    """(cross-entropy, accuracy) of predicted probabilities against integer labels `y`."""
    import keras

    loss = keras.losses.categorical_crossentropy(keras.utils.to_categorical(y, probabilities.shape[-1]), probabilities)
    return float(np.mean(np.asarray(loss))), float(np.mean(probabilities.argmax(axis=1) == y))


def calibration_bins(probabilities, y, bins=15):
    """Reliability table: per non-empty equal-width confidence bin, its count, mean confidence and accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"bin": b, "low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return rows


def expected_calibration_error(probabilities, y, bins=15):
    """ECE over equal-width confidence bins (Guo et al. 2017; 15 as usual)."""
    rows = calibration_bins(probabilities, y, bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / len(y))


def negative_log_likelihood(probabilities, y):
    """Mean -log p(true class): scikit-learn's log_loss over every class."""
    from sklearn.metrics import log_loss

    return float(log_loss(y, probabilities, labels=range(probabilities.shape[1])))


def temperature_scaled(probabilities, temperature):
    """softmax(log p / T): the model's probabilities at temperature T (T > 1 softens them)."""
    logits = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities, y):
    """The temperature minimising the NLL of softmax(log p / T) on (probabilities, y) (Guo et al.
    2017), fitted on val; accuracy is unchanged."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: negative_log_likelihood(temperature_scaled(probabilities, np.exp(log_t)), y),
                            bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def calibration(val_probabilities, y_val, test_probabilities, y_test, bins=15):
    """ECE and NLL on the test set, the temperature fitted on val, and both again with it."""
    temperature = fit_temperature(val_probabilities, y_val)
    scaled = temperature_scaled(test_probabilities, temperature)
    return {
        "ece": expected_calibration_error(test_probabilities, y_test, bins),
        "nll": negative_log_likelihood(test_probabilities, y_test),
        "temperature": temperature,
        "ece_temperature_scaled": expected_calibration_error(scaled, y_test, bins),
        "nll_temperature_scaled": negative_log_likelihood(scaled, y_test),
        "val_nll": negative_log_likelihood(val_probabilities, y_val),
        "val_nll_temperature_scaled": negative_log_likelihood(temperature_scaled(val_probabilities, temperature), y_val),
        "bins": bins,
    }


def reliability_diagram(rows, scaled_rows, title, ece, scaled_ece, temperature, bins=15):
    """Accuracy against confidence per bin, before and after temperature scaling, with each bin's share."""
    plt = _figure()
    fig, (ax, share) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-", label=f"model (ECE {ece:.2%})")
    ax.plot([r["confidence"] for r in scaled_rows], [r["accuracy"] for r in scaled_rows], "s-",
            label=f"temperature {temperature:.2f} (ECE {scaled_ece:.2%})")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}: reliability (test set)")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    total = sum(r["count"] for r in rows)
    share.bar([(r["low"] + r["high"]) / 2 for r in rows], [r["count"] / total for r in rows],
              width=1 / bins, color="tab:blue", alpha=0.6)
    share.set(xlabel="confidence (top probability)", ylabel="share of images")
    share.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def per_class_report(y_true, y_pred, names):
    """scikit-learn's classification report (precision, recall, F1) and per-class accuracy."""
    from sklearn.metrics import classification_report, confusion_matrix

    report = classification_report(y_true, y_pred, labels=range(len(names)), target_names=names,
                                   output_dict=True, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=range(len(names)))
    with np.errstate(invalid="ignore"):
        accuracy = np.nan_to_num(matrix.diagonal() / matrix.sum(axis=1))
    return report, matrix, {name: float(a) for name, a in zip(names, accuracy)}


def write_rows(path, header, rows):
    from cifar.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history, title):
    """The seed's two panels: accuracy and loss per epoch, train against validation."""
    plt = _figure()
    epochs = [int(r["epoch"]) for r in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    acc.plot(epochs, [r["accuracy"] for r in history], "o-", label="Training accuracy")
    acc.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="Validation accuracy")
    acc.set(xlabel="Epoch", ylabel="Accuracy", title="Training and validation accuracy")
    loss.plot(epochs, [r["loss"] for r in history], "o-", label="Training loss")
    loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="Validation loss")
    loss.set(xlabel="Epoch", ylabel="Loss", title="Training and validation loss")
    for ax in (acc, loss):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix, names, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="Predicted class", ylabel="True class", title=title)
    threshold = matrix.max() / 2
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def misclassified_gallery(images, y_true, y_pred, probabilities, names, count, title):
    """The first `count` misclassified test images with true and predicted labels."""
    plt = _figure()
    wrong = np.flatnonzero(y_true != y_pred)[:count]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"true: {names[y_true[i]]}\npred: {names[y_pred[i]]} ({probabilities[i].max():.0%})",
                     fontsize=8)
    fig.suptitle(f"{title}: {len(wrong)} of {int((y_true != y_pred).sum())} misclassified test images")
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=100):
    from cifar.outputs import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _figure().close(fig)


def robustness_against_severity(rows, robustness):
    """Each model's accuracy against severity (0: clean), averaged over the corruptions."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        result = robustness[r["model"]]
        cells = result["corruptions"].values()
        severities = sorted(int(k.split("_")[1]) for k in next(iter(cells)) if k.startswith("severity_"))
        means = [100 * sum(c[f"severity_{s}"] for c in cells) / len(cells) for s in severities]
        ax.plot([0, *severities], [100 * result["clean_accuracy"], *means], "o-",
                label=f"{r['label']} (mean {result['mean_corruption_accuracy']:.1%})")
    ax.set(xlabel="corruption severity (0: clean)", ylabel="test accuracy (%), mean over corruptions",
           title="Accuracy on corrupted test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_against_time(rows):
    """Test accuracy against training time, one labelled point per model."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        minutes = r["wall_time_s"] / 60
        ax.scatter(minutes, r["test_accuracy"] * 100, s=60)
        ax.annotate(f"{r['label']}\n{r['test_accuracy']:.2%}", (minutes, r["test_accuracy"] * 100),
                    textcoords="offset points", xytext=(8, -4), fontsize=9)
    ax.set(xlabel="training time (minutes, this machine)", ylabel="test accuracy (%)",
           title="Test accuracy against training time")
    ax.grid(alpha=0.3)
    ax.margins(x=0.35, y=0.15)
    fig.tight_layout()
    return fig


def summary_markdown(rows):
    """The comparison table of reports/summary.md from one dict per model."""
    header = ("| model | | test accuracy | train accuracy | test loss | train loss | parameters "
              "| model size | best val accuracy (epoch) | epochs | training time | training img/s |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r.get('label', '')} | {r['test_accuracy']:.2%} | {r['train_accuracy']:.2%} | {r['test_loss']:.4f} "
            f"| {r['train_loss']:.4f} | {r['params']:,} | {r['size_mb']:.1f} MB "
            f"| {r['best_val_accuracy']:.2%} ({r['best_epoch']}) | {r['epochs_run']} "
            f"| {r['wall_time_s'] / 60:.1f} min | {r['train_img_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def quality_markdown(rows, corrupted_images, corruption_count):
    """reports/summary.md's robustness and calibration table."""
    lines = [
        f"Corruptions: the mean accuracy over {corruption_count} corruptions x 5 severities of the first {corrupted_images:,} "
        "test images (the `robustness` stage), beside the clean accuracy on those images. Calibration, on the "
        "whole test set: expected calibration error (15 bins), negative log-likelihood, and the ECE after "
        "temperature scaling fitted on the val split.",
        "",
        "| model | mean corruption accuracy | clean accuracy (same images) | ECE | NLL | temperature | ECE after temperature |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mean_corruption_accuracy']:.2%} | {r['clean_subset_accuracy']:.2%} | {r['ece']:.2%} "
            f"| {r['nll']:.3f} | {r['temperature']:.2f} | {r['ece_temperature_scaled']:.2%} |"
        )
    return "\n".join(lines) + "\n"
