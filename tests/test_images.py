"""Your own images (prepare.source: images): the folder reader's answers to good and bad folders,
the CIFAR-10 path unmoved, and scikit-learn's real handwritten digits through the whole pipeline."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cifar import data, images
from conftest import MIRROR, REPO, run, require_shared, script, set_param, tiny_repo


def write_png(path, value, size=(10, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def folder(root, counts, start=0):
    """A class folder per {name: images}, each image a distinct flat colour."""
    value = start
    for name, count in counts.items():
        for i in range(count):
            write_png(root / name / f"{i:03d}.png", value % 256)
            value += 1
    return root


def warnings():
    lines = []
    return lines, lines.append


def test_a_class_folder_layout_gives_stratified_splits_class_names_in_order_and_the_side(tmp_path):
    root = folder(tmp_path / "photos", {"zebra": 10, "ant": 10, "Moth 2": 20})
    write_png(root / "ant" / "nested" / "deep.png", 200)  # sub-folders of a class are its images too
    (root / "ant" / ".DS_Store").write_bytes(b"\0")  # hidden files are not images
    (root / ".git").mkdir()  # nor hidden folders classes
    arrays, names, report = images.prepare(root, 24, 0.2, 0.25, 0.05, seed=42)
    assert names == ["Moth 2", "ant", "zebra"]  # sorted: the label of each is its index
    assert arrays["x_train"].shape[1:] == (24, 24, 3) and arrays["x_train"].dtype == np.uint8
    total = sum(len(arrays[f"y_{s}"]) for s in ("train", "val", "test"))
    assert total == report["files"] == 41 and report["unreadable"] == {} and not report["own_test_split"]
    # Stratified: each class keeps its share (20 : 11 : 10) in test and in val, to within one image.
    for split in ("test", "val"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=3)
        assert np.abs(counts - counts.sum() * np.array([20, 11, 10]) / 41).max() <= 1, (split, counts)
    again, _, report2 = images.prepare(root, 24, 0.2, 0.25, 0.05, seed=42)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays) and report2["sha256"] == report["sha256"]
    write_png(root / "ant" / "004.png", 201)  # a changed image changes the folder's digest
    assert images.prepare(root, 24, 0.2, 0.25, 0.05, seed=42)[2]["sha256"] != report["sha256"]


def test_train_and_test_folders_are_the_users_split_and_a_shared_image_is_named(tmp_path):
    root = tmp_path / "photos"
    folder(root / "train", {"cat": 6, "dog": 6})
    folder(root / "test", {"cat": 2, "dog": 2}, start=100)
    shutil.copy(root / "train" / "cat" / "000.png", root / "test" / "cat" / "copy.png")
    lines, warn = warnings()
    arrays, names, report = images.prepare(root, 16, 0.2, 0.2, 0.05, seed=1, warn=warn)
    assert report["own_test_split"] and names == ["cat", "dog"] and len(arrays["y_test"]) == 5
    assert len(arrays["y_train"]) + len(arrays["y_val"]) == 12
    assert lines == ["prepare: warning: the same image in training and test data: test/cat/copy.png = train/cat/000.png"]


def test_unreadable_files_are_listed_and_left_out_and_too_many_stop_the_stage(tmp_path):
    root = folder(tmp_path / "photos", {"a": 20, "b": 20})
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image")
    lines, warn = warnings()
    arrays, _, report = images.prepare(root, 8, 0.2, 0.2, 0.1, seed=0, warn=warn)
    assert sum(len(arrays[f"y_{s}"]) for s in ("train", "val", "test")) == 40
    assert set(report["unreadable"]) == {str(root / "a" / "empty.jpg"), str(root / "b" / "notes.txt")}
    assert f"prepare: warning: {root / 'a' / 'empty.jpg'}: left out: empty file (0 bytes)" in lines
    assert lines[-1] == "prepare: 2 of 42 files left out as unreadable (listed above)"
    for i in range(4):  # 5 of 25 files in b unreadable: over 10%
        (root / "b" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(images.FolderError, match=r"more than prepare.max_unreadable = 10% of a class\): .*b: 5 of 25"):
        images.prepare(root, 8, 0.2, 0.2, 0.1, seed=0, warn=lambda line: None)


@pytest.mark.parametrize("make, message", [
    (lambda r: folder(r, {"only": 10}), "one class folder \\(only\\); a classifier needs at least two classes"),
    (lambda r: folder(r, {"a": 10, "b": 2}), "too few readable images for the split in: b \\(2\\); each class needs at least 6"),
    (lambda r: folder(r, {"a": 10, "-b": 10}), "folder names that are not valid class names: '-b'"),
    (lambda r: (folder(r, {"a": 10}), (r / "b").mkdir()), "no files; every class needs images"),
    (lambda r: (folder(r / "train", {"a": 5, "b": 5}), folder(r / "test", {"a": 2})),
     "train/ and test/ must hold the same class folders; only one of them has b"),
    (lambda r: (folder(r, {"a": 10, "b": 10}), folder(r / "train", {"a": 5})), "a train/ or test/ folder beside class folders"),
    (lambda r: None, "is not a folder: give the folder of your images"),
])
def test_a_folder_that_cannot_make_a_data_set_is_a_one_line_error_naming_what_to_fix(tmp_path, make, message):
    make(tmp_path / "photos")
    with pytest.raises(images.FolderError, match=message) as err:
        images.prepare(tmp_path / "photos", 8, 0.2, 0.2, 0.05, seed=0, warn=lambda line: None)
    assert "\n" not in str(err.value)


def test_the_same_image_under_two_classes_is_a_warning_naming_both_files(tmp_path):
    root = folder(tmp_path / "photos", {"a": 10, "b": 10})
    shutil.copy(root / "a" / "000.png", root / "b" / "dup.png")
    lines, warn = warnings()
    images.prepare(root, 8, 0.2, 0.2, 0.05, seed=0, warn=warn)
    assert any(line.startswith("prepare: warning: the same image under two classes: ") and "a/000.png" in line
               and "b/dup.png" in line for line in lines)


def test_the_cifar10_prepared_file_is_byte_identical_to_the_reference_runs(tmp_path):
    """The CIFAR-10 path did not move: prepare on the real archive writes the file whose md5
    dvc.lock records for the reference run, so no stage after it reruns for CIFAR-10 users."""
    import hashlib

    import yaml

    require_shared(MIRROR)
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["prepare"]
    recorded = next(out["md5"] for out in lock["outs"] if out["path"] == "data/prepared/cifar10.npz")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    sha = data.read_sha256_file(MIRROR.with_name("SHA256SUMS"), MIRROR.name)
    run(["python", script("prepare"), "--archive", str(MIRROR), "--out", "cifar10.npz", "--metrics", "prepare.json"],
        cwd=work, CIFAR10_SHA256=sha)
    assert hashlib.md5((work / "cifar10.npz").read_bytes()).hexdigest() == recorded
    metrics = json.loads((work / "prepare.json").read_text())
    assert metrics["classes"][0] == "airplane" and metrics["side"] == 32 and metrics["imbalance"] == pytest.approx(1, abs=0.05)


def digits_folder(root):
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels; real data no one here wrote)
    as grey PNGs, one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        path = root / f"digit-{label}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(path)
    return [f"digit-{n}" for n in range(10)]


@pytest.mark.e2e
def test_the_real_digits_folder_runs_the_whole_pipeline_at_64_px(tmp_path):
    """`dvc repro` on a folder of real images as files: prepare reads it (at 64 px, so the
    pipeline's second side runs end to end; CIFAR-10's 32 runs in the shared pipeline) and every
    stage after it serves its ten classes: the artifacts' metadata, evaluate's accuracy, the
    robustness suite, parity, predict on one of its images, the demo page. Quick settings: the seed
    CNN narrow (with the seed's augmentation, its default), the fast models narrow and in float32 (narrow and in bfloat16 they did not learn these grey
    digits in 12 epochs; at their defaults they do: studies/small_folder/advice.json), each with enough steps to be well above chance; MobileNetV2 starts from
    random weights here, so only runs every stage."""
    repo, env = tiny_repo(tmp_path, epochs=2)  # the tiny pipeline's settings; every stage runs on the digits
    names = digits_folder(repo / "data" / "digits")
    settings = {"prepare.source": "images", "prepare.images": "data/digits", "prepare.side": 64,
                "robustness.images": 50, "cnn.filters": [16, 32, 32], "cnn.dense_units": 64,
                "shared.train.batch_size": 16, "shared.train.epochs": 12,
                "fast.widths": [32, 64, 64], "fast.train.batch_size": 64, "fast.train.epochs": 12,
                "fast.train.precision": "float32", "fast_robust.train.epochs": 12}
    for key, value in settings.items():
        set_param(repo, key, value)
    out = run(["dvc", "repro"], cwd=repo, **env).stdout
    assert "prepare.source is images (data/digits): nothing to download" in out
    assert run(["dvc", "status"], cwd=repo, **env).stdout.strip() == "Data and pipelines are up to date."
    prepared = json.loads((repo / "reports/metrics/prepare.json").read_text())
    assert prepared["classes"] == names and prepared["side"] == 64 and prepared["source"]["files"] == 1797
    assert sum(prepared["counts"].values()) == 1797 and prepared["source"]["unreadable"] == {}
    registry = yaml_load(repo / "params.yaml")["models"]
    evaluated = {name: json.loads((repo / f"reports/metrics/evaluate/{name}.json").read_text())[name] for name in registry}
    accuracies = {name: evaluated[name]["test"]["accuracy"] for name in registry}
    times = {name: json.loads((repo / f"reports/metrics/train/{name}.json").read_text())[name]["wall_time_s"]
             for name in registry}
    print("digits, test accuracy:", accuracies, "training seconds:", times)
    assert min(accuracies[name] for name in ("cnn", "fast", "fast_robust")) > 0.8, accuracies  # chance: 0.1
    assert set(evaluated["cnn"]["per_class"]) == set(names)  # evaluate's tables name the folder's classes
    for name in registry:
        meta = json.loads((repo / f"models/export/{name}/metadata.json").read_text())
        assert meta["classes"] == names and meta["input_shape"] == [64, 64, 3]
        parity = json.loads((repo / f"reports/metrics/export/{name}.json").read_text())
        assert parity["targets"]["float_agreement_met"], (name, parity["targets"])
    robust = {name: json.loads((repo / f"reports/metrics/robustness/{name}.json").read_text())[name] for name in registry}
    assert all(0 < robust[name]["mean_corruption_accuracy"] <= 1 for name in registry)
    photo = sorted((repo / "data/digits/digit-7").iterdir())[0]
    answer = run(["python", "scripts/tools/predict.py", "--model", "models/export/cnn/saved_model", "--json",
                  str(photo)], cwd=repo, **env).stdout
    result = json.loads(answer)["results"][0]
    assert result["top"][0]["class"] in names and result["notes"] == ["grayscale converted to RGB", "8x8 resized to 64x64"]


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_folder_that_would_not_fit_in_memory_stops_before_reading_naming_a_side_that_fits(tmp_path):
    root = folder(tmp_path / "photos", {"a": 3, "b": 3})
    with pytest.raises(images.FolderError) as err:
        images.read_folder(root, 128, 0.05, available=6 * 128 * 128 * 3 * images.MEMORY_COPIES - 1)
    message = str(err.value)
    assert f"{root}: 6 images at 128 px take 0.00 GB as prepared (128x128x3 bytes each)" in message
    assert "Set prepare.side to 64" in message
    assert images.memory_needed(1000, 128) == 49_152_000  # 49.2 MB per 1,000 images, as the docstring says
    found, _, _ = images.read_folder(root, 128, 0.05, available=6 * 128 * 128 * 3 * images.MEMORY_COPIES)
    assert found["all"][0].shape == (6, 128, 128, 3)


def test_a_folder_is_prepared_at_128_px_where_prepare_side_is_null(tmp_path, workdir):
    import yaml

    folder(workdir / "photos", {"a": 10, "b": 10})
    values = yaml.safe_load((workdir / "params.yaml").read_text())
    assert values["prepare"]["side"] is None  # the default: CIFAR-10's own 32, a folder's 128
    values["prepare"].update(source="images", images="photos")
    (workdir / "params.yaml").write_text(yaml.safe_dump(values))
    run(["python", script("prepare"), "--archive", "absent.tar.gz", "--out", "images.npz", "--metrics", "prepare.json"],
        cwd=workdir)
    metrics = json.loads((workdir / "prepare.json").read_text())
    assert metrics["side"] == 128 and metrics["images_mb"] == round(20 * 128 * 128 * 3 / 1e6, 1)
