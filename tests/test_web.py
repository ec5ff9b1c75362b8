"""The browser demo in a real headless Chromium: the page's top-1 must be the Keras model's.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the test
is skipped on a developer machine and fails under CI, so CI can never pass without running it.
"""

import os
import re
import shutil
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import REPO, missing, MODEL_NAMES

from cifar import data, decode, inference, page

pytestmark = pytest.mark.e2e
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PHOTO = REPO / "tests" / "data" / "chelsea_cat.jpg"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        missing("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    # Parity's own Chromium, on WASM whatever GPU this machine has, so the checks below hold anywhere.
    driver = page.chrome(timeout=60, extra_flags=("--disable-gpu",))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(pipeline):
    """scripts/tools/serve.py on a free port, as parity starts it, serving the pipeline's exported
    models and their accuracies."""
    repo = pipeline[0]
    proc, url = page.serve(repo / "models" / "export", repo / "reports" / "metrics" / "export")
    yield url, repo
    proc.terminate()
    proc.wait(timeout=10)


def wait_for(driver, script, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def keras_top1(repo, name, pixels):
    """The Keras model's top-1 and probabilities, at the temperature its export ships (if any)."""
    import json

    from cifar import evaluation

    model = inference.load(repo / "models" / "trained" / f"{name}.keras").model  # registers our layers
    probabilities = model.predict(pixels[None].astype(np.float32), verbose=0)
    meta = json.loads((repo / "models" / "export" / name / "metadata.json").read_text())
    if meta.get("temperature"):
        probabilities = evaluation.temperature_scaled(probabilities, meta["temperature"]["temperature"])
    probabilities = probabilities[0]
    return data.CLASS_NAMES[int(probabilities.argmax())], probabilities


def test_server_serves_the_page_tfjs_and_models_locally(server):
    url, repo = server
    page = urllib.request.urlopen(url).read().decode()
    assert 'src="vendor/tfjs/tf.min.js"' in page and "http" not in re.sub(r"<!--.*?-->", "", page).split("<body>")[0]
    wasm = urllib.request.urlopen(url + "vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm")
    assert wasm.headers["Content-Type"] == "application/wasm"
    index = urllib.request.urlopen(url + "models/index.json").read().decode()
    assert '"name": "cnn"' in index and '"url": "models/cnn/tfjs/model.json"' in index
    # A path that, unguarded, resolves to a file that exists (the exports are models/export/ in
    # the pipeline's copy, so ../../params.yaml is the copy's params.yaml).
    import http.client

    assert (repo / "models" / "export" / ".." / ".." / "params.yaml").is_file()
    conn = http.client.HTTPConnection(url.split("//")[1].rstrip("/"), timeout=10)
    conn.putrequest("GET", "/models/../../params.yaml")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 404 and b"shared:" not in response.read()


def test_page_top1_equals_the_keras_prediction(browser, server, tmp_path):
    url, repo = server
    arrays = data.load_prepared(repo / "data" / "prepared" / "cifar10.npz")
    image = arrays["x_test"][7]                       # a real test image, saved as the user's file
    path = tmp_path / "test_image.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    browser.get(url)
    wait_for(browser, "return document.getElementById('status').dataset.state === 'ready'")
    assert "wasm backend" in browser.find_element("id", "status").text
    # The menu offers every model, with its test accuracy and its accuracy on corrupted photos.
    options = browser.execute_script("return Array.from(document.getElementById('model').options).map(o => [o.value, o.text])")
    assert sorted(value for value, _ in options) == sorted(MODEL_NAMES)
    assert all(re.search(r"\(\d+\.\d%, \d+\.\d% on corrupted photos\)$", text) for _, text in options), options
    browser.find_element("id", "file").send_keys(str(path))
    for name in MODEL_NAMES:  # fast: test-time augmentation inside the TF.js graph
        # Selecting a model (re)loads it and re-classifies the image on show.
        browser.execute_script(f"const s = document.getElementById('model'); s.value = '{name}';"
                               "s.dispatchEvent(new Event('change'));")
        wait_for(browser, f"const r = document.getElementById('result'); "
                          f"return r.dataset.state === 'done' && r.dataset.model === '{name}'")
        expected, probabilities = keras_top1(repo, name, image)
        rows = browser.find_elements("css selector", "#top3 li")
        assert len(rows) == 3
        assert rows[0].get_attribute("data-class") == expected == browser.find_element("id", "result").get_attribute("data-top1")
        shown = float(rows[0].get_attribute("data-probability"))
        assert abs(shown - probabilities.max()) < 1e-4
        assert rows[0].find_element("class name", "pct").text == f"{probabilities.max() * 100:.1f}%"

    # Every resource the page loaded came from the local server.
    sources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert sources and all(s.startswith(url) or s.startswith("blob:") for s in sources)


def test_page_and_predict_agree_on_a_rotated_phone_photo(browser, server, tmp_path):
    """A JPEG stored sideways with EXIF orientation 6, as phones write them: the page (the
    browser applies the orientation) and predict.py must see the same upright picture."""
    from PIL import Image

    url, repo = server
    photo = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(photo, k=1)))  # the sensor's sideways view
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)

    pixels, notes = decode.read_image(path)
    assert "EXIF orientation 6 applied" in notes
    browser.get(url)
    wait_for(browser, "return document.getElementById('status').dataset.state === 'ready'")
    browser.find_element("id", "file").send_keys(str(path))
    wait_for(browser, "const r = document.getElementById('result'); return r.dataset.state === 'done'")
    assert browser.find_element("id", "filename").text == "phone.jpg, 451×300"  # upright: wider than high
    drawn = np.array(browser.execute_script(
        "return Array.from(document.getElementById('input').getContext('2d').getImageData(0, 0, 32, 32).data)"),
        np.float32).reshape(32, 32, 4)[..., :3]
    # Same picture, same way up: close pixel for pixel (the two resamplers differ a little),
    # and far from the sideways or upside-down versions.
    error = np.abs(drawn - pixels).mean()
    for wrong in (np.rot90(pixels, 1), np.rot90(pixels, -1), np.rot90(pixels, 2)):
        assert error < np.abs(drawn - wrong).mean() / 3
    assert error < 12, error
    shown_by = browser.find_element("id", "result").get_attribute("data-model")  # the page's default model
    expected, _ = keras_top1(repo, shown_by, pixels)
    page_top1 = browser.find_element("id", "result").get_attribute("data-top1")
    top3 = [li.get_attribute("data-class") for li in browser.find_elements("css selector", "#top3 li")]
    assert page_top1 == expected or expected in top3


def test_page_classifies_a_photo_of_any_size(browser, server):
    url, _ = server
    browser.get(url)
    wait_for(browser, "return document.getElementById('status').dataset.state === 'ready'")
    browser.find_element("id", "file").send_keys(str(PHOTO))
    wait_for(browser, "return document.getElementById('result').dataset.state === 'done'")
    assert browser.find_element("id", "filename").text == "chelsea_cat.jpg, 451×300"
    assert len(browser.find_elements("css selector", "#top3 li .bar")) == 3
    drawn = browser.execute_script(
        "return Array.from(document.getElementById('input').getContext('2d').getImageData(0, 0, 32, 32).data)")
    assert len(set(drawn)) > 50  # the 32x32 model input holds the photo, not a blank canvas
    if shot := os.environ.get("WEB_SCREENSHOT"):  # to look at the page by eye
        browser.save_screenshot(shot)


def test_the_page_is_cross_origin_isolated_and_loads_the_threaded_wasm_build(browser, server, tmp_path):
    """serve.py's COOP/COEP headers let the page use SharedArrayBuffer, so TF.js loads its
    multi-threaded WASM build (with at least 2 threads on 2 cores); the page says where it runs and
    how long each image took."""
    url, repo = server
    response = urllib.request.urlopen(url)
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    browser.get(url)
    wait_for(browser, "return document.getElementById('status').dataset.state === 'ready'")
    assert browser.execute_script("return window.crossOriginIsolated") is True
    threads = browser.execute_script("return tf.wasm.getThreadsCount()")
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.endswith("/tfjs-backend-wasm-threaded-simd.wasm") for name in fetched), fetched
    # At least 2 threads where there are 2 cores (TF.js alone takes half: 1), at most 4; and the
    # page's start-up override of navigator.hardwareConcurrency is gone once it runs.
    cores = browser.execute_script("return navigator.hardwareConcurrency")
    assert cores == os.cpu_count() and not browser.execute_script(
        "return Object.getOwnPropertyNames(navigator).includes('hardwareConcurrency')")
    assert threads == min(cores, 4, max(2, cores // 2)), (threads, cores)
    assert re.search(rf"ready in \d+ ms \(TF\.js [\d.]+, wasm backend, {threads} thread\(s\)\)",
                     browser.find_element("id", "status").text)
    image = data.load_prepared(repo / "data" / "prepared" / "cifar10.npz")["x_test"][3]
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    browser.find_element("id", "file").send_keys(str(path))
    wait_for(browser, "return document.getElementById('result').dataset.state === 'done'")
    shown_by = browser.find_element("id", "result").get_attribute("data-model")
    assert re.fullmatch(rf"classified in \d+ ms by {shown_by}", browser.find_element("id", "timing").text)
    measured = browser.execute_async_script("window.demo.benchmark(3).then(arguments[arguments.length - 1])")
    assert measured["model"] == shown_by and measured["backend"] == "wasm" and measured["threads"] == threads
    assert measured["latency_ms"] > 0 and measured["load_ms"] > 0 and measured["cross_origin_isolated"] is True
