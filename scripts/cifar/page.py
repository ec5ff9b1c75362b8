"""The demo page's own numbers: a TF.js export in headless Chromium, as a visitor's browser runs it.
`measure` serves web/ with the export (serve.py), opens it through chromedriver, waits for the
model and calls the page's `demo.benchmark(runs)`: load time, median latency and backend."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "scripts" / "tools" / "serve.py"
# Chromium's flags for a measurement: headless, no first-run work, nothing fetched from the
# network. The GPU stays allowed, so the page finds WebGL where the machine has one.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run",
         "--metrics-recording-only", "--window-size=1100,800")


class PageUnavailable(RuntimeError):
    """Chromium or chromedriver is not installed: the page cannot be measured here."""


def browser_paths():
    """(chromium, chromedriver) paths, or PageUnavailable naming what to install."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise PageUnavailable("the page's latency needs Debian's chromium and chromium-driver "
                              "(sudo apt-get install chromium chromium-driver)")
    return chromium, driver


def serve(exports, metrics=None):
    """serve.py on a free port for the exports under `exports`: (process, base URL)."""
    metrics = metrics or Path(exports) / ".no-metrics"
    proc = subprocess.Popen([sys.executable, str(SERVE), "--port", "0", "--quiet", "--exports", str(exports),
                             "--metrics", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"serve.py did not start: {line}{proc.stderr.read()}")
    return proc, f"http://127.0.0.1:{match.group(1)}/"


def chrome(timeout=180, extra_flags=()):
    """Headless Chromium through chromedriver with FLAGS and `extra_flags`."""
    chromium, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, *extra_flags):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look anything up
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    return driver


def measure(export_dir, name, runs, timeout=180, threads=None):
    """The page with the export `export_dir` loaded: its numbers (`threads`: the page's ?threads=N)."""
    browser_paths()  # PageUnavailable before any work
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="page-") as tmp:
        # Only the page's files of the export: serve.py serves nothing a symlink points out to.
        folder = Path(tmp) / name
        folder.mkdir()
        shutil.copy(Path(export_dir) / "metadata.json", folder)
        shutil.copytree(Path(export_dir) / "tfjs", folder / "tfjs")
        server, url = serve(Path(tmp))
        driver = None
        try:
            driver = chrome(timeout)
            driver.get(url + (f"?threads={int(threads)}" if threads else ""))
            WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
                "const s = document.getElementById('status'); "
                f"return s.dataset.state === 'error' || (s.dataset.state === 'ready' && s.dataset.model === '{name}')"))
            state = driver.execute_script("return document.getElementById('status')")
            if state.get_attribute("data-state") == "error":
                raise RuntimeError(f"the demo page could not run {name}: {state.text}")
            result = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                f"window.demo.benchmark({int(runs)}).then(done, (err) => done({{error: String(err)}}));")
            if "error" in result:
                raise RuntimeError(f"the demo page's benchmark failed on {name}: {result['error']}")
            version = driver.capabilities.get("browserVersion", "")
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=10)
    agent = result.pop("user_agent", "")
    headless = "headless " if "Headless" in agent else ""
    return {**result, "browser": f"{headless}Chromium {version}".strip()}
