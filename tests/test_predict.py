"""scripts/tools/predict.py and the image reading behind it: any format, size, depth; errors per file."""

import json

import cv2
import numpy as np
import pytest

from conftest import REPO, run, script
from test_export import small_cnn

import predict
from cifar import data, decode, export, inference, tflite

PHOTO = REPO / "tests" / "data" / "chelsea_cat.jpg"  # a real 451x300 photograph (see README there)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same small model as .keras, SavedModel and float32 .tflite."""
    folder = tmp_path_factory.mktemp("predict_models")
    model = small_cnn(seed=3)
    model.save(folder / "small.keras")
    export.saved_model(model, folder / "saved_model", np.zeros((2, 32, 32, 3), np.uint8))
    (folder / "small.tflite").write_bytes(tflite.tflite(folder / "saved_model", "float32"))
    # As an export folder: its metadata.json names the classes.
    (folder / "metadata.json").write_text(json.dumps({"classes": list(data.CLASS_NAMES), "input_shape": [32, 32, 3]}))
    return folder, model


@pytest.fixture
def pictures(tmp_path):
    """One file of each kind the command must handle, good and bad."""
    rng = np.random.default_rng(0)
    paths = {
        "gray": tmp_path / "gray.png",
        "rgba": tmp_path / "rgba.png",
        "deep": tmp_path / "deep.tif",
        "small": tmp_path / "small.bmp",
        "empty": tmp_path / "empty.png",
        "text": tmp_path / "notes.png",
        "missing": tmp_path / "missing.jpg",
    }
    cv2.imwrite(str(paths["gray"]), rng.integers(0, 256, (40, 50), dtype=np.uint8))
    cv2.imwrite(str(paths["rgba"]), rng.integers(0, 256, (64, 48, 4), dtype=np.uint8))
    cv2.imwrite(str(paths["deep"]), rng.integers(0, 65536, (70, 90, 3), dtype=np.uint16))
    cv2.imwrite(str(paths["small"]), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("not an image at all\n")
    return paths


def test_read_image_converts_depth_channels_and_size(tmp_path):
    deep = np.full((32, 32), 65535, np.uint16)
    deep[:, :16] = 257 * 10
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    pixels, notes = decode.read_image(tmp_path / "deep.png")
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == [10, 10, 10] and pixels[0, 31].tolist() == [255, 255, 255]
    assert notes == ["16-bit converted to 8-bit", "grayscale converted to RGB"]

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 2] = 200            # red in OpenCV's BGRA order
    rgba[:, 16:, 3] = 255         # right half opaque, left half fully transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    pixels, notes = decode.read_image(tmp_path / "rgba.png")
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[0, 31].tolist() == [200, 0, 0]
    assert notes == ["RGBA converted to RGB (composited on white)"]

    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = (0, 255, 0)  # only the centre square is green
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    pixels, notes = decode.read_image(tmp_path / "wide.png")
    assert (pixels == [0, 255, 0]).all()
    assert notes == ["96x32 centre 32x32 cropped, resized to 32x32"]


def test_a_32x32_rgb_image_is_passed_through_exactly(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image[..., ::-1])
    pixels, notes = decode.read_image(tmp_path / "x.png")
    assert notes == [] and (pixels == image).all()


@pytest.mark.parametrize("artifact", ["small.keras", "saved_model", "small.tflite"])
def test_predict_prints_top3_for_good_files_and_an_error_line_for_each_bad_one(models, pictures, artifact, capsys):
    folder, model = models
    status = predict.main(["--model", str(folder / artifact), str(PHOTO), *map(str, pictures.values())])
    out, err = capsys.readouterr()
    assert status == 1
    for good in (PHOTO, pictures["gray"], pictures["rgba"], pictures["deep"], pictures["small"]):
        assert str(good) in out
    assert "451x300 centre 300x300 cropped, resized to 32x32" in out
    assert "grayscale converted to RGB" in out and "RGBA converted to RGB" in out and "16-bit converted" in out
    assert f"{pictures['empty']}: empty file (0 bytes)" in err
    assert f"{pictures['text']}: not a readable image: its size cannot be read from its header" in err
    assert f"{pictures['missing']}: no such file" in err
    assert len(err.strip().splitlines()) == 3
    # The printed top-1 is the model's own prediction on the same pixels.
    pixels, _ = decode.read_image(PHOTO)
    expected = data.CLASS_NAMES[int(model.predict(pixels[None].astype(np.float32), verbose=0).argmax())]
    block = out.split(str(PHOTO), 1)[1].splitlines()
    assert block[1].split()[0] == expected and len(block) >= 4


def test_predict_json(models, pictures, capsys):
    folder, _ = models
    status = predict.main(["--model", str(folder / "small.tflite"), "--json", str(pictures["small"]), str(PHOTO)])
    document = json.loads(capsys.readouterr().out)
    assert status == 0
    first, photo = document["results"]
    assert first["notes"] == [] and len(first["top"]) == 3
    probabilities = [entry["probability"] for entry in first["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    assert photo["notes"] == ["451x300 centre 300x300 cropped, resized to 32x32"]


def test_predict_command_line(models, tmp_path):
    folder, _ = models
    proc = run(["python", script("predict"), "--model", str(folder / "small.tflite"), str(PHOTO),
                str(tmp_path / "nope.png")], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(str(PHOTO)) and len(lines) == 4 and lines[1].strip().endswith("%")
    assert proc.stderr.strip().endswith(f"predict: error: {tmp_path / 'nope.png'}: no such file")

    bad = run(["python", script("predict"), "--model", str(tmp_path / "model.onnx"), str(PHOTO)], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "no such model file" in bad.stderr and "Traceback" not in bad.stderr


def png_header_only(path, width, height, bit_depth=8, color_type=2):
    """A PNG whose header claims width x height and holds no pixel data: reading its size must
    not need the pixels (a decoder that tried would fail, or allocate gigabytes)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width,height,depth", [(50000, 50000, 8), (32768, 32767, 16)])
def test_an_image_too_large_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch, width, height, depth):
    path = png_header_only(tmp_path / "huge.png", width, height, depth)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(cv2, "imread", no_decoding)
    # Pillow's own guard stops it first (over 179 megapixels); its count is in the message.
    with pytest.raises(decode.ImageError, match=rf"^image too large: {width * height:,} pixels by its header"):
        decode.read_image(path)


def test_predict_reports_a_too_large_image_and_goes_on(models, tmp_path, capsys):
    folder, _ = models
    huge = png_header_only(tmp_path / "huge.png", 50000, 50000)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((64, 64, 3), np.uint8))
    status = predict.main(["--model", str(folder / "small.tflite"), str(huge), str(small)])
    out, err = capsys.readouterr()
    assert status == 1 and str(small) in out
    assert f"predict: error: {huge}: image too large: 2,500,000,000 pixels" in err
    assert predict.main(["--model", str(folder / "small.tflite"), "--max-pixels", "1000", str(small)]) == 1
    assert "image too large: 64x64" in capsys.readouterr().err


def test_deep_images_are_converted_without_float64_copies(tmp_path):
    """A 16-bit 2000x2000 RGB image decodes to 24 MB; a float64 copy of it would be 96 MB."""
    import tracemalloc

    deep = np.random.default_rng(0).integers(0, 65536, (2000, 2000, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    tracemalloc.start()
    pixels, notes = decode.read_image(tmp_path / "deep.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert notes[0] == "16-bit converted to 8-bit" and pixels.shape == (32, 32, 3)
    assert peak < 2 * deep.nbytes, f"peak {peak / 1e6:.0f} MB for a {deep.nbytes / 1e6:.0f} MB image"


def exif_image(array, orientation):
    """A PIL image of `array` (RGB) carrying EXIF `orientation`."""
    from PIL import Image

    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    return image, exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_and_browsers_apply_it(orientation):
    from PIL import ImageOps

    array = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    image, exif = exif_image(array, orientation)
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(decode.orient(array, orientation), expected)


def test_a_rotated_phone_photo_is_read_upright(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 clockwise to view) is read as
    the viewer shows it: the top half of the upright picture is red."""
    upright = np.zeros((64, 48, 3), np.uint8)
    upright[:32] = (220, 30, 30)
    upright[32:] = (30, 30, 220)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what the camera wrote: 48 high, 64 wide
    image, exif = exif_image(stored, 6)
    image.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    pixels, notes = decode.read_image(tmp_path / "phone.jpg")
    assert "EXIF orientation 6 applied" in notes and "48x64 centre 48x48 cropped, resized to 32x32" in notes
    assert pixels[:14, :, 0].mean() > 180 and pixels[18:, :, 2].mean() > 180


@pytest.mark.parametrize("artifact", ["saved_model", "model.tflite"])
def test_a_corrupt_model_exits_2_with_one_line(tmp_path, artifact):
    if artifact == "saved_model":
        (tmp_path / artifact).mkdir()
        (tmp_path / artifact / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 100)
    else:
        (tmp_path / artifact).write_bytes(b"TFL3" + bytes(range(256)) * 4)
    proc = run(["python", script("predict"), "--model", str(tmp_path / artifact), str(PHOTO)], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    kind = "SavedModel" if artifact == "saved_model" else "TF-Lite model"
    assert proc.stderr.strip().startswith(f"predict: error: {tmp_path / artifact}: not a readable {kind}")


def test_a_corrupt_or_old_metadata_json_is_one_line_with_exit_2(models, tmp_path, capsys):
    folder, _ = models
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "small.tflite").write_bytes((folder / "small.tflite").read_bytes())
    for text in ('{"classes": ["a", ', '{"label": "no classes: an older export"}'):
        (export_dir / "metadata.json").write_text(text)
        assert predict.main(["--model", str(export_dir / "small.tflite"), str(PHOTO)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "metadata.json is not an export's metadata" in err and "dvc repro" in err


def test_a_model_that_loads_but_takes_another_input_is_one_line_with_exit_2(tmp_path, capsys):
    import keras

    other = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    other.save(tmp_path / "other.keras")
    (tmp_path / "metadata.json").write_text(json.dumps({"classes": list(data.CLASS_NAMES)}))
    assert predict.main(["--model", str(tmp_path / "other.keras"), str(PHOTO)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loads, but does not take 32x32 RGB images" in err


def radiance_header_only(path, width, height):
    """A Radiance .hdr (a format Pillow cannot parse) whose header claims width x height."""
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode())
    return path


def test_a_large_hdr_is_refused_from_its_header_before_opencv_decodes_it(tmp_path, monkeypatch):
    """20000x20000 is under OpenCV's own cap of 2**30 pixels: without reading the header, OpenCV
    would allocate 4.8 GB of float32 before any check."""
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cv2, "imread", no_decode)
    with pytest.raises(decode.ImageError, match=r"image too large: 20000x20000 HDR is 400,000,000 pixels"):
        decode.read_image(radiance_header_only(tmp_path / "bomb.hdr", 20000, 20000))
    assert decode.image_header(radiance_header_only(tmp_path / "small.hdr", 640, 480)) == (640, 480, "HDR", 1)


def test_opencv_is_capped_when_the_package_is_imported():
    code = "import os, cifar; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    proc = run(["python", "-c", code], cwd=REPO / "scripts")
    assert proc.stdout.strip() == str(decode.MAX_PIXELS)


def test_reading_a_header_never_switches_pillows_global_limit(tmp_path, monkeypatch):
    """Image.MAX_IMAGE_PIXELS is process-wide: toggling it is not thread-safe (the server reads
    images from several threads)."""
    import types

    from PIL import Image

    written = []

    class Watched(types.ModuleType):
        def __setattr__(self, name, value):
            if name == "MAX_IMAGE_PIXELS":
                written.append(value)
            super().__setattr__(name, value)

    monkeypatch.setattr(Image, "__class__", Watched)
    with pytest.raises(decode.ImageError, match="image too large"):
        decode.read_image(png_header_only(tmp_path / "huge.png", 50000, 50000))
    assert decode.image_header(PHOTO)[:2] == (451, 300)
    assert written == []


def test_a_trained_model_without_metadata_takes_its_class_names_and_side_from_its_data(tmp_path, capsys):
    """A .keras file outside an export: the class names of the prepared data it was trained on, the
    side of its own input (here 48 px and three classes of someone's own images)."""
    import keras

    model = keras.Sequential([keras.Input((48, 48, 3)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "own.keras")
    prepared = tmp_path / "prepared.npz"
    data.save_prepared(prepared, {"class_names": np.array(["cat", "dog", "fox"])})
    assert predict.class_names(tmp_path / "own.keras", prepared) == ("cat", "dog", "fox")
    predictor = inference.load(tmp_path / "own.keras")
    assert predictor.side == 48
    predict.check_takes_images(predictor, tmp_path / "own.keras", 3)
    pixels, notes = decode.read_image(PHOTO, side=predictor.side)
    assert pixels.shape == (48, 48, 3) and notes == ["451x300 centre 300x300 cropped, resized to 48x48"]
    with pytest.raises(inference.ModelError, match="no metadata.json beside it names its classes"):
        predict.class_names(tmp_path / "own.keras", tmp_path / "absent.npz")
