"""Export: the conversions, the int8 BatchNormalization rewrite, parity targets, bad input, and
the exported artifacts of the end-to-end pipeline."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar.outputs import StageError

from conftest import MODEL_NAMES, REPO, missing, run, script

import export as export_stage  # scripts/export.py
import parity
from cifar import data, export, inference, outputs, tflite


def small_cnn(seed=0):
    """The seed CNN's layer pattern (Conv-ReLU then BatchNormalization), small, with moving
    statistics spread over four orders of magnitude, as a trained model's are."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32, 32, 3), name="image"),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),  # after a linear conv: TF-Lite folds it, left alone
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (np.asarray(w) for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.uniform(0, 0.5, mean.shape), 10.0 ** rng.uniform(-4, 0, var.shape)])
    return model


def images(count, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def test_folding_batchnorm_after_an_activation_keeps_the_outputs():
    model = small_cnn()
    folded, count = export.fold_batchnorm_after_activation(model)
    assert count == 1
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds.count("DepthwiseConv2D") == 1 and kinds.count("BatchNormalization") == 1
    x = images(16).astype(np.float32)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_int8_calibration_in_equal_batches_records_the_ranges_one_image_at_a_time_does(tmp_path, monkeypatch):
    """The calibrator sizes its input once, so every batch has the largest size of at most 50 that
    divides the count; the int8 file's scales are those of a calibration image by image."""
    import functools

    from ai_edge_litert.interpreter import Interpreter

    calibration = images(60, seed=4)
    batches = [sample[0] for sample in tflite.representative(calibration)()]
    assert [len(b) for b in batches] == [30, 30] and np.array_equal(np.concatenate(batches), calibration)
    assert [len(s[0]) for s in tflite.representative(images(53))()] == [1] * 53  # a prime above 50: one by one
    saved = tmp_path / "saved_model"
    export.saved_model(small_cnn(), saved, images(8))

    def quantization(payload):
        details = Interpreter(model_content=payload).get_tensor_details()
        return {d["name"]: (d["quantization"][0], d["quantization"][1]) for d in details if d["quantization"][0]}

    batched = quantization(tflite.tflite(saved, "int8", calibration))
    monkeypatch.setattr(tflite, "representative", functools.partial(tflite.representative, most=1))
    single = quantization(tflite.tflite(saved, "int8", calibration))
    assert batched.keys() == single.keys() and len(single) > 5
    for name, (scale, zero) in single.items():
        assert batched[name][0] == pytest.approx(scale, rel=1e-4) and batched[name][1] == zero, name


def test_folding_leaves_functional_models_alone():
    import keras

    inputs = keras.Input((32, 32, 3))
    outputs_ = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs_)
    assert export.fold_batchnorm_after_activation(model) == (model, 0)


def test_a_temperature_rescales_the_logits_of_sequential_and_functional_models():
    import keras

    from cifar import evaluation

    x = images(16).astype(np.float32)
    cnn = small_cnn()
    inputs = keras.Input((32, 32, 3))
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs)))
    functional = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    for model in (cnn, functional):
        scaled = export.calibrated_model(model, 0.5)
        expected = evaluation.temperature_scaled(model.predict(x, verbose=0), 0.5)
        np.testing.assert_allclose(scaled.predict(x, verbose=0), expected, atol=1e-5)
        assert (scaled.predict(x, verbose=0).argmax(1) == model.predict(x, verbose=0).argmax(1)).all()
    assert isinstance(export.calibrated_model(cnn, 2.0), keras.Sequential)
    assert export.fold_batchnorm_after_activation(export.calibrated_model(cnn, 2.0))[1] == 1  # int8 folding still applies
    no_softmax = keras.Model(inputs, logits)
    with pytest.raises(export.ExportError, match="is not a softmax"):
        export.calibrated_model(no_softmax, 2.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """small_cnn exported by the stage's own function into a folder."""
    out = tmp_path_factory.mktemp("export") / "small"
    out.mkdir()
    arrays = {"x_train": images(200, seed=2), "x_test": images(40, seed=3), "x_val": images(30, seed=6),
              "y_val": np.arange(30) % 10, "class_names": np.array(data.CLASS_NAMES)}
    model = small_cnn()
    artifacts = export_stage.export.export_all(
        "small", model, arrays, {"int8_calibration_images": 100, "int8_selection_images": 0, "int8_float_layers": 2,
                                 "tfjs_quantization": "float16", "seed": 0}, out)
    return out, model, artifacts, arrays


def test_every_format_is_written_and_computes_what_keras_computes(exported):
    out, model, artifacts, arrays = exported
    assert set(artifacts) == {"saved_model", "tflite_float32", "tflite_dynamic_range", "tflite_int8", "tfjs"}
    x = arrays["x_test"]
    reference = model.predict(x.astype(np.float32), verbose=0)
    for name in ("saved_model", "small_float32.tflite", "small_dynamic_range.tflite", "small_int8.tflite"):
        predicted = inference.load(out / name).predict(x)
        assert predicted.shape == (40, 10) and np.allclose(predicted.sum(axis=1), 1, atol=0.02)
        tolerance = 1e-5 if "float" in name or name == "saved_model" else 0.2
        assert np.abs(predicted - reference).max() < tolerance, name
    spec = json.loads((out / "tfjs" / "model.json").read_text())
    assert spec["format"] == "graph-model"
    quantized = [w for group in spec["weightsManifest"] for w in group["weights"] if "quantization" in w]
    assert artifacts["tfjs"]["quantization"] == "float16" and quantized
    assert {w["quantization"]["dtype"] for w in quantized} == {"float16"}


def test_the_saved_models_serving_signature_takes_image_and_gives_probabilities(exported):
    out, _, _, _ = exported
    shown = run([str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir", str(out / "saved_model"),
                 "--tag_set", "serve", "--signature_def", "serving_default"], cwd=out).stdout
    assert "inputs['image']" in shown and "outputs['probabilities']" in shown and "output_0" not in shown
    assert "shape: (-1, 32, 32, 3)" in shown and "shape: (-1, 10)" in shown
    np.save(out.parent / "x.npy", images(2).astype(np.float32))
    ran = run([str(Path(sys.executable).parent / "saved_model_cli"), "run", "--dir", str(out / "saved_model"),
               "--tag_set", "serve", "--signature_def", "serving_default", "--inputs", "image=../x.npy"],
              cwd=out).stdout  # the README's line
    assert "Result for output key probabilities" in ran
    spec = json.loads((out / "tfjs" / "model.json").read_text())
    assert list(spec["signature"]["outputs"]) == ["probabilities"]  # TF.js keeps the name too


def test_int8_model_takes_raw_uint8_pixels_and_gives_uint8_probabilities(exported):
    out, _, artifacts, _ = exported
    int8 = artifacts["tflite_int8"]
    assert int8["input"]["dtype"] == "uint8" and int8["output"]["dtype"] == "uint8"
    assert int8["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert int8["output"]["quantization"] == {"scale": 1 / 256, "zero_point": 0}
    assert int8["calibration_images"] == 100
    # Chosen on val, never test: what was tried, in order, and why this one ships.
    assert int8["selection"]["split"] == "val" and int8["selection"]["images"] == 30
    tried = [t["candidate"] for t in int8["candidates"]]
    order = ["integer_only", "float_worst2"]  # the preference, made only while none is within
    assert tried == order[:len(tried)]
    assert int8["candidate"] in tried and int8["integer_only"] == (int8["candidate"] != "float_worst2") and int8["why"]
    assert artifacts["tflite_float32"]["input"]["dtype"] == "float32"
    assert int8["bytes"] < artifacts["tflite_float32"]["bytes"]


def test_each_tflite_file_says_where_its_bytes_go(exported):
    _, _, artifacts, _ = exported
    floats, int8 = artifacts["tflite_float32"]["bytes_by_part"], artifacts["tflite_int8"]["bytes_by_part"]
    for artifact in (artifacts["tflite_float32"], artifacts["tflite_int8"]):
        assert sum(artifact["bytes_by_part"].values()) == artifact["bytes"]
        assert artifact["bytes_by_part"]["tensor_names"] > 0 and artifact["bytes_by_part"]["other"] >= 0
    assert floats["float32_tensor_data"] > 0 and floats["quantization_params"] == 0
    # int8 weights are a quarter of the float32 ones; the biases stay 32-bit (int32).
    assert int8["int8_tensor_data"] * 4 <= floats["float32_tensor_data"] and int8["int32_tensor_data"] > 0
    assert int8["quantization_params"] > 0


def test_tfjs_model_runs_in_node_on_wasm_its_images_split_between_processes(exported, monkeypatch):
    out, model, _, arrays = exported
    x = arrays["x_test"]
    # 4 images timed in one process alone, the rest split between 2 processes at once: the
    # probabilities come back in the images' order.
    monkeypatch.setattr(inference, "TFJS_TIMED_IMAGES", 4)
    probabilities, timing = inference.run_tfjs(out / "tfjs" / "model.json", x, batch_size=16, latency_runs=2,
                                               processes=2)
    reference = model.predict(x.astype(np.float32), verbose=0)
    assert len(x) > 6 and probabilities.shape == reference.shape
    assert "wasm backend" in timing["runtime"] and timing["throughput_img_s"] > 0
    assert np.abs(probabilities - reference).max() < 5e-3  # float16 weights


def test_a_failing_converter_reports_its_error(tmp_path):
    (tmp_path / "not_a_saved_model").mkdir()
    with pytest.raises(export.ExportError, match="tensorflowjs_converter failed"):
        export.tfjs(tmp_path / "not_a_saved_model", tmp_path / "tfjs")


def test_a_failing_conversion_leaves_no_export_folder(tmp_path, monkeypatch):
    model_path = tmp_path / "models" / "cnn.keras"
    model_path.parent.mkdir()
    small_cnn().save(model_path)
    prepared = tmp_path / "cifar10.npz"
    np.savez(prepared, x_train=images(50), y_train=np.zeros(50, np.uint8), x_val=images(10),
             y_val=np.zeros(10, np.uint8), x_test=images(10), y_test=np.zeros(10, np.uint8),
             class_names=np.array(data.CLASS_NAMES))  # val: the default export fits a temperature on it
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise export.ExportError("tensorflowjs_converter failed (simulated)")

    monkeypatch.setattr(export, "tfjs", broken)
    out = tmp_path / "models" / "export" / "cnn"
    monkeypatch.setattr(sys, "argv", ["export.py", "--name", "cnn", "--model", str(model_path),
                                      "--data", str(prepared), "--out", str(out)])
    with pytest.raises(export.ExportError, match="simulated"):
        export_stage.main()
    assert not out.exists()
    assert list((tmp_path / "models" / "export").iterdir()) == []  # no temporary folder left either


def test_export_before_training_names_the_model_and_its_stage(workdir):
    out = workdir / "models" / "export" / "mobilenet"
    proc = run(["python", script("export"), "--name", "mobilenet", "--model", "models/trained/mobilenet.keras", "--data", "data/prepared/cifar10.npz",
                "--out", str(out)], cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "models/trained/mobilenet.keras not found" in proc.stderr and "train@mobilenet" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_parity_targets_come_from_the_formats_table():
    artifacts = {key: {"target": fmt.target} for key, fmt in export.FORMATS_BY_KEY.items()}
    assert {k: a["target"] for k, a in artifacts.items()} == {
        "saved_model": "float", "tflite_float32": "float", "tflite_float32_plain": "none",
        "tflite_dynamic_range": "none", "tflite_int8": "int8", "tfjs": "float"}
    results = {
        "keras": {"accuracy": 0.8000},
        "saved_model": {"agreement": 1.0},
        "tflite_float32": {"agreement": 0.9995, "bytes": 1000},
        "tflite_dynamic_range": {"agreement": 0.90, "bytes": 300},  # held to nothing: not the worst float
        "tfjs": {"agreement": 0.9980},
        "tflite_int8": {"accuracy": 0.7960, "bytes": 290},
    }
    met = export.targets(results, artifacts)
    assert met["float_agreement_worst"] == "tfjs" and not met["float_agreement_met"]
    assert met["int8_size_met"] and met["int8_accuracy_met"] and abs(met["int8_accuracy_drop_pp"] - 0.4) < 1e-9
    artifacts["tfjs"]["target"] = "none"  # what export writes for a quantized TF.js model
    results["tflite_int8"].update(accuracy=0.7900, bytes=400)
    met = export.targets(results, artifacts)
    assert met["float_agreement_met"] and not met["int8_size_met"] and not met["int8_accuracy_met"]


def test_tfjs_parity_runs_a_stratified_sample_sized_for_the_bound_and_every_image_on_a_disagreement():
    assert parity.sample_size() == 2995 and parity.sample_size(0.99) == 299  # 0.999**2995 <= 5% < 0.999**2994
    assert parity.lower_bound(2995, 2995) >= 0.999 > parity.lower_bound(2994, 2995)
    labels = np.repeat(np.arange(10), [50, 150, 100, 100, 100, 100, 100, 100, 100, 100])
    chosen = parity.stratified(labels, 299, seed=3)
    assert len(chosen) == 299 and np.all(np.diff(chosen) > 0)
    assert abs(np.sum(labels[chosen] == 1) - 45) <= 1 and abs(np.sum(labels[chosen] == 0) - 15) <= 1  # each class its share
    assert np.array_equal(parity.stratified(labels, 5000, seed=3), np.arange(len(labels)))

    reference = np.eye(10, dtype=np.float32)[labels]
    x = np.arange(len(labels))[:, None]  # an "image" is its index: the fake runtime returns its reference row
    calls = []

    def runtime(flip):
        def run(path, images, batch_size, latency_runs):
            calls.append(len(images))
            out = reference[images[:, 0]].copy()
            if flip is not None and flip in images[:, 0]:
                out[images[:, 0] == flip] = np.roll(out[images[:, 0] == flip], 1, axis=1)
            return out, {"latency_ms": 1.0}
        return run

    probabilities, indices, _ = parity.run_sampled(runtime(None), "m", x, reference, labels, chosen, 64, 2)
    assert calls == [299] and np.array_equal(indices, chosen) and np.array_equal(probabilities, reference[chosen])
    calls.clear()
    probabilities, indices, _ = parity.run_sampled(runtime(int(chosen[7])), "m", x, reference, labels, chosen, 64, 2)
    assert calls == [299, len(labels) - 299] and np.array_equal(indices, np.arange(len(labels)))
    result = parity.compare(probabilities, reference, labels)  # every image in its own row
    assert result["images"] == len(labels) and result["agreement"] == 1 - 1 / len(labels)
    assert np.array_equal(np.delete(probabilities, chosen[7], axis=0), np.delete(reference, chosen[7], axis=0))


def test_a_quantized_tfjs_export_is_held_to_no_float_target(exported):
    out, model, artifacts, arrays = exported  # exported with tfjs_quantization: float16
    assert artifacts["tfjs"]["target"] == "none" and artifacts["tflite_float32"]["target"] == "float"


@pytest.mark.e2e
def test_pipeline_exports_and_checks_every_model(pipeline):
    repo, env, _ = pipeline
    for name in MODEL_NAMES:
        folder = repo / "models" / "export" / name
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["classes"][3] == "cat" and meta["source"]["sha256"] == outputs.sha256_of(repo / "models" / "trained" / f"{name}.keras")
        for artifact in meta["artifacts"].values():  # on disk, and the size metadata.json (and the table) give
            path = folder / artifact["file"]
            on_disk = path.parent if path.name == "model.json" else path  # TF.js: the graph and its weight files
            files = [on_disk] if on_disk.is_file() else [p for p in on_disk.rglob("*") if p.is_file()]
            assert files and sum(p.stat().st_size for p in files) == artifact["bytes"], artifact
        metrics = json.loads((repo / "reports" / "metrics" / "export" / f"{name}.json").read_text())
        assert metrics["test_images"] == 40
        assert set(metrics["artifacts"]) == {"keras", "saved_model", "tflite_float32", "tflite_dynamic_range",
                                             "tflite_int8", "tfjs"}
        # The Keras model is the reference: no agreement with itself is claimed.
        assert "agreement" not in metrics["artifacts"]["keras"]
        for key in ("saved_model", "tflite_float32", "tfjs"):
            assert metrics["artifacts"][key]["agreement"] == 1.0
            assert metrics["artifacts"][key]["max_abs_diff"] < 1e-4
        for artifact in metrics["artifacts"].values():
            assert artifact["throughput_img_s"] > 0 and artifact["latency_ms"] > 0 and artifact["bytes"] > 0
        # The TF.js model in the demo page, in headless Chromium (cifar.page): demo@NAME's own file.
        page = json.loads((repo / "reports" / "metrics" / "demo" / f"{name}.json").read_text())["page"]
        if "skipped" in page:
            missing(f"parity did not measure the demo page: {page['skipped']}")
        assert page["backend"] == "wasm" and page["threads"] >= 1 and page["cross_origin_isolated"] is True
        assert page["latency_ms"] > 0 and page["load_ms"] > 0 and page["runs"] == 3 and "Chromium" in page["browser"]
        # With more than one thread, TF.js's own single thread is measured beside it.
        assert (page["one_thread_latency_ms"] > 0) if page["threads"] > 1 else "one_thread_latency_ms" not in page
    table = (repo / "reports" / "artifacts.md").read_text()
    assert "| seed CNN | wasm, " in table and "default model: <= 50 ms" in table
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=repo, **env).stdout)
    files = next(iter(shown.values()))["data"]
    assert "reports/metrics/export/cnn.json" in files and "reports/metrics/export/mobilenet.json" in files


@pytest.mark.e2e
def test_every_tflite_file_runs_in_mediapipe_with_its_class_names_and_every_format_carries_its_labels(pipeline, tmp_path):
    """MediaPipe's ImageClassifier, the runtime Android, iOS, web and Python apps use, loads each
    TF-Lite file of the seed CNN as the export wrote it (float32 and dynamic range: float input
    with the metadata's normalization; int8: uint8 input), names the classes from the file's own
    labels and picks the class predict.py (LiteRT) picks, on test images at the model's side."""
    from PIL import Image

    repo, env, _ = pipeline
    folder = repo / "models" / "export" / "cnn"
    meta = json.loads((folder / "metadata.json").read_text())
    classes = meta["classes"]
    images = []
    for i, image in enumerate(data.load_prepared(repo / "data" / "prepared" / "cifar10.npz")["x_test"][:20]):
        images.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(image).save(images[-1])
    files = {key: folder / meta["artifacts"][key]["file"] for key in ("tflite_float32", "tflite_dynamic_range", "tflite_int8")}
    mediapipe = [str(export.MEDIAPIPE_PYTHON), script("mediapipe_tasks")]
    answer = json.loads(run([*mediapipe, "classify", "--models", *map(str, files.values()), "--images", *images],
                            cwd=repo).stdout)
    checked = json.loads((repo / "reports" / "metrics" / "export" / "cnn.json").read_text())
    for key, path in files.items():
        litert = json.loads(run(["python", script("predict"), "--model", str(path), "--json", "--top", "1", *images],
                                cwd=repo).stdout)["results"]
        # MediaPipe computes with its own TF-Lite build: the float file to 1e-4; the dynamic-range
        # one quantizes its activations on the fly, in kernels of its own; int8: one uint8 step.
        tolerance = {"tflite_float32": 1e-4, "tflite_dynamic_range": 1e-2, "tflite_int8": 1 / 256}[key]
        for (index, name, score), theirs in zip(answer["results"][str(path)], litert, strict=True):
            assert name == classes[index] == theirs["top"][0]["class"], (key, name, theirs)
            assert score == pytest.approx(theirs["top"][0]["probability"], abs=tolerance)
        shown = json.loads(run([*mediapipe, "show", str(path)], cwd=repo).stdout)  # read back from the file
        assert shown["labels"] == classes and shown["metadata"]["name"] == "cnn"
        assert shown["metadata"]["version"] == meta["source"]["sha256"][:12]
        assert meta["artifacts"][key]["bytes_by_part"]["metadata"] > 0
        # parity@cnn ran the same check on its 200 first test images, and says with which MediaPipe.
        assert checked["artifacts"][key]["mediapipe"] == {
            **checked["artifacts"][key]["mediapipe"], "mediapipe": answer["mediapipe"], "top1_agreement": 1.0, "names": True}
    assert checked["targets"]["mediapipe_met"] is True
    assert (folder / "labels.txt").read_text().splitlines() == classes
    # TF.js: the labels and the input convention in model.json; SavedModel: a `classes` endpoint.
    user = json.loads((folder / "tfjs" / "model.json").read_text())["userDefinedMetadata"]["classification"]
    assert user == {"labels": classes, "input": export.INPUT_CONVENTION}
    loaded = run(["python", "-c", "import sys, tensorflow as tf; "
                  "print(*tf.saved_model.load(sys.argv[1]).classes()['classes'].numpy().astype(str), sep=',')",
                  str(folder / "saved_model")], cwd=repo).stdout.strip().splitlines()[-1]
    assert loaded.split(",") == classes


@pytest.mark.e2e
def test_a_shipped_temperature_is_in_every_artifact_and_checked_by_parity(pipeline, tmp_path):
    """export.temperature: val puts the val-fitted temperature inside every format; parity holds
    each to Keras' probabilities at that temperature."""
    import yaml

    from cifar import evaluation

    repo, env, _ = pipeline
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["export"]["temperature"] = "val"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    model, prepared = repo / "models" / "trained" / "cnn.keras", repo / "data" / "prepared" / "cifar10.npz"
    out, metrics = tmp_path / "export", tmp_path / "parity.json"
    run(["python", script("export"), "--name", "cnn", "--model", str(model), "--data", str(prepared), "--out", str(out)],
        cwd=tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    temperature = meta["temperature"]["temperature"]
    assert meta["temperature"]["fitted_on"] == "val split" and temperature > 0
    assert meta["temperature"]["val_nll_temperature_scaled"] <= meta["temperature"]["val_nll"] + 1e-9
    run(["python", script("parity"), "--name", "cnn", "--model", str(model), "--export", str(out), "--data", str(prepared),
         "--metrics", str(metrics)], cwd=tmp_path)
    checked = json.loads(metrics.read_text())
    for key in ("saved_model", "tflite_float32", "tfjs"):
        assert checked["artifacts"][key]["agreement"] == 1.0 and checked["artifacts"][key]["max_abs_diff"] < 1e-4
    x = data.load_prepared(prepared)["x_test"]
    keras_model = inference.load(model)
    shipped = inference.load(out / "cnn_float32.tflite").predict(x)
    np.testing.assert_allclose(shipped, evaluation.temperature_scaled(keras_model.predict(x), temperature), atol=1e-4)


def test_int8_ships_the_first_candidate_within_target_on_val_and_makes_no_later_one():
    made = []

    def candidate(name, accuracy, integer_only=True):
        def make():
            made.append(name)
            return name.encode()
        return name, integer_only, f"the {name} file", make

    accuracy = {b"integer_only": 0.900, b"float_worst3": 0.921, b"more": 0.93}
    candidates = [candidate("integer_only", 0.9), candidate("float_worst3", 0.921, False), candidate("more", 0.93, False)]
    payload, chosen = tflite.choose_int8(candidates, accuracy.get, float_accuracy=0.924, drop_pp=0.5)
    assert payload == b"float_worst3" and made == ["integer_only", "float_worst3"]  # "more" never made
    assert chosen["candidate"] == "float_worst3" and chosen["integer_only"] is False
    assert "first candidate within 0.5 pp" in chosen["why"]
    assert [round(t["drop_pp"], 2) for t in chosen["candidates"]] == [2.4, 0.3]
    assert all("payload" not in t for t in chosen["candidates"])
    # None within: the most accurate ships, and the record says why.
    made.clear()
    payload, chosen = tflite.choose_int8(candidates[:2], accuracy.get, float_accuracy=0.95, drop_pp=0.5)
    assert payload == b"float_worst3" and "no candidate within 0.5 pp" in chosen["why"]
    # A candidate LiteRT cannot run is recorded with its error and passed over; none that runs stops.
    def refuses(payload):
        if payload == b"integer_only":
            raise RuntimeError("failed to create XNNPACK runtime\nNode number 32 failed to prepare.")
        return accuracy[payload]

    payload, chosen = tflite.choose_int8(candidates, refuses, float_accuracy=0.924, drop_pp=0.5)
    assert payload == b"float_worst3" and chosen["candidates"][-1] == {
        "candidate": "integer_only", "integer_only": True, "what": "the integer_only file",
        "error": "failed to create XNNPACK runtime"}
    with pytest.raises(StageError, match="no candidate runs in LiteRT: integer_only: failed to create XNNPACK runtime"):
        tflite.choose_int8(candidates[:1], refuses, float_accuracy=0.924, drop_pp=0.5)


def test_the_int8_size_target_counts_a_file_within_a_point_of_its_structural_floor():
    parts = {"int8_tensor_data": 2_200, "int32_tensor_data": 70, "quantization_params": 410, "tensor_names": 14}
    artifacts = {"tflite_float32": {"target": "float"},
                 "tflite_int8": {"target": "int8", "bytes_by_part": parts}}
    results = {"keras": {"accuracy": 0.92}, "tflite_float32": {"bytes": 8_900, "agreement": 1.0},
               "tflite_int8": {"bytes": 2_720, "accuracy": 0.92, "agreement": 0.99}}
    summary = export.targets(results, artifacts)
    assert summary["int8_size_ratio"] > 0.30 and summary["int8_floor_ratio"] == pytest.approx(2_680 / 8_900)
    assert summary["int8_size_met"]  # 30.6% of float32, 0.45 points over its floor of 30.1%
    results["tflite_int8"]["bytes"] = 2_800
    assert not export.targets(results, artifacts)["int8_size_met"]  # 31.5%: 1.35 points over
