import numpy as np
import pytest

from cifar import evaluation
from conftest import run, script

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_per_class_report_matches_hand_counts():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 2])
    report, matrix, accuracy = evaluation.per_class_report(y_true, y_pred, NAMES)
    assert matrix[0].tolist()[:3] == [2, 1, 0] and matrix.sum() == 10
    assert accuracy["airplane"] == pytest.approx(2 / 3) and accuracy["cat"] == 0.0
    assert accuracy["dog"] == 0.0  # no dog images: accuracy 0, not NaN
    assert report["airplane"]["precision"] == pytest.approx(2 / 3)  # 2 of 3 predicted airplanes
    assert report["bird"]["recall"] == pytest.approx(3 / 4)


def test_summary_table():
    row = {"model": "cnn", "label": "seed CNN", "test_accuracy": 0.8673, "train_accuracy": 0.9241, "test_loss": 0.4,
           "train_loss": 0.2, "params": 509322, "size_mb": 6.1, "best_val_accuracy": 0.8712,
           "best_epoch": 23, "epochs_run": 25, "wall_time_s": 3600, "train_img_per_s": 274.4}
    table = evaluation.summary_markdown([row])
    assert "| cnn | seed CNN | 86.73% | 92.41% | 0.4000 | 0.2000 | 509,322 | 6.1 MB | 87.12% (23) | 25 | 60.0 min | 274 |" in table


def test_accuracy_against_time_puts_each_model_where_its_numbers_say(tmp_path):
    rows = [{"model": "cnn", "label": "seed CNN", "test_accuracy": 0.81, "wall_time_s": 5900},
            {"model": "fast", "label": "fast", "test_accuracy": 0.94, "wall_time_s": 4800}]
    fig = evaluation.accuracy_against_time(rows)
    points = [tuple(c.get_offsets()[0]) for c in fig.axes[0].collections]
    assert points == [(5900 / 60, 81.0), (80.0, 94.0)]
    assert [t.get_text() for t in fig.axes[0].texts] == ["seed CNN\n81.00%", "fast\n94.00%"]
    evaluation.save_figure(fig, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 5_000


def test_training_curves_come_from_the_dvclive_log_and_count_epochs_from_one(tmp_path):
    import math

    from evaluate import read_history

    metrics = tmp_path / "live" / "plots" / "metrics"
    for rel, steps in (("train/loss", 3), ("train/accuracy", 3), ("train/learning_rate", 3),
                       ("eval/loss", 2), ("eval/accuracy", 2)):  # no validation pass in the first epoch
        (metrics / rel).parent.mkdir(parents=True, exist_ok=True)
        name = rel.split("/")[1]
        (metrics / f"{rel}.tsv").write_text(f"step\t{name}\n" + "".join(f"{s}\t0.{s + 1}\n" for s in range(3 - steps, 3)))
    rows = read_history(tmp_path / "live", "train@cnn")  # DVCLive's steps are 0-based
    assert [r["epoch"] for r in rows] == [1, 2, 3] and math.isnan(rows[0]["val_accuracy"])
    assert rows[2] == {"epoch": 3, "loss": 0.3, "accuracy": 0.3, "lr": 0.3, "val_loss": 0.3, "val_accuracy": 0.3}
    fig = evaluation.training_curves(rows, "t")
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]
    assert fig.axes[0].get_xlabel() == "Epoch" and fig.axes[1].get_ylabel() == "Loss"


def test_missing_model_names_file_and_stage(tmp_path):
    from cifar import models

    with pytest.raises(models.ModelError, match=r"cnn.keras not found: it is written by the 'train@cnn' stage"):
        models.load(tmp_path / "cnn.keras", stage="train@cnn")


def test_corrupt_model_names_file_and_stage(tmp_path):
    bad = tmp_path / "mobilenet.keras"
    bad.write_bytes(b"not a zip file")
    from cifar import inference, models

    assert inference.ModelError is models.ModelError  # one error type for a model that cannot be loaded
    with pytest.raises(models.ModelError, match=r"mobilenet.keras is not a readable Keras model .* 'train@mobilenet' stage"):
        models.load(bad, stage="train@mobilenet")


def test_evaluate_stage_with_corrupt_model_writes_nothing(workdir, archive):
    from cifar import data

    path, sha = archive
    x_train, y_train, x_test, y_test, names = data.read(path, sha)
    data.save_prepared(workdir / "cifar10.npz", {
        "x_train": x_train, "y_train": y_train, "x_val": x_test, "y_val": y_test, "x_test": x_test,
        "y_test": y_test, "class_names": np.array(names), "archive_sha256": np.array(sha)})
    (workdir / "trained").mkdir()
    (workdir / "trained" / "mobilenet.keras").write_bytes(b"\x00" * 100)
    proc = run(["python", script("evaluate"), "--name", "mobilenet", "--data", "cifar10.npz",
                "--model", "trained/mobilenet.keras", "--live", "live", "--metrics", "out/mobilenet.json",
                "--plots", "out/eval", "--figures", "out/figures"], cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "evaluate: error: trained/mobilenet.keras is not a readable Keras model" in proc.stderr
    assert "'train@mobilenet' stage" in proc.stderr
    assert not (workdir / "out").exists()


def predictor(confidence, accuracy, n=20_000, seed=0):
    """Synthetic 10-class probabilities whose top probability is `confidence` (an array or a
    number) and whose top class is right with probability `accuracy` (likewise)."""
    rng = np.random.default_rng(seed)
    confidence = np.broadcast_to(confidence, n)
    top = rng.integers(0, 10, n)
    probabilities = np.tile(((1 - confidence) / 9)[:, None], (1, 10))
    probabilities[np.arange(n), top] = confidence
    right = rng.random(n) < np.broadcast_to(accuracy, n)
    labels = np.where(right, top, (top + rng.integers(1, 10, n)) % 10)
    return probabilities, labels


def test_ece_of_a_calibrated_predictor_is_about_zero_and_of_an_overconfident_one_large():
    confidence = np.random.default_rng(1).uniform(0.2, 1.0, 20_000)
    calibrated = evaluation.expected_calibration_error(*predictor(confidence, confidence), bins=15)
    assert calibrated < 0.01
    overconfident = evaluation.expected_calibration_error(*predictor(0.99, 0.6), bins=15)
    assert overconfident == pytest.approx(0.39, abs=0.01)
    rows = evaluation.calibration_bins(*predictor(0.99, 0.6), bins=15)
    assert len(rows) == 1 and rows[0]["bin"] == 14 and rows[0]["count"] == 20_000


def test_temperature_scaling_lowers_the_val_nll_and_the_ece_and_keeps_the_predictions():
    val, y_val = predictor(0.95, 0.7, seed=2)
    test, y_test = predictor(0.95, 0.7, seed=3)
    result = evaluation.calibration(val, y_val, test, y_test, bins=15)
    assert result["temperature"] > 1  # overconfident: softened
    assert result["val_nll_temperature_scaled"] < result["val_nll"] - 0.1
    assert result["ece_temperature_scaled"] < result["ece"] / 3 and result["nll_temperature_scaled"] < result["nll"]
    scaled = evaluation.temperature_scaled(test, result["temperature"])
    np.testing.assert_array_equal(scaled.argmax(axis=1), test.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-9)
    assert evaluation.negative_log_likelihood(test, y_test) == pytest.approx(
        -np.mean(np.log(test[np.arange(len(y_test)), y_test])), rel=1e-6)


def test_predict_runs_any_batch_through_one_traced_graph_as_keras_does():
    import keras

    from cifar import tta

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
                            keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(10, activation="softmax")])
    model = tta.wrap(net, 2)  # the views go through as one batch
    x = np.random.default_rng(0).integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)
    ours = evaluation.predict(model, x, batch_size=16)  # 16, 16, 5: three batch sizes, one trace
    assert ours.dtype == np.float32 and ours.shape == (37, 10)
    np.testing.assert_allclose(ours, model.predict(x.astype(np.float32), verbose=0), atol=1e-6)
    np.testing.assert_allclose(evaluation.predict(model, x[:3], batch_size=1), ours[:3], atol=1e-6)
    assert evaluation._FORWARD[model].experimental_get_tracing_count() == 1
    assert evaluation.predict(model, x[:0]).shape == (0, 10)
