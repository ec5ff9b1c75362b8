"""scripts/tools/serve.py on its own: what it serves, and what it refuses (no listings, no traversal,
no odd paths, no half-written exports)."""

import http.client
import json
import threading

import pytest

import serve


@pytest.fixture
def server(tmp_path):
    """The demo server over an exports folder with one model and one export still being written."""
    exports = tmp_path / "exports"
    for name in ("cnn", ".cnn.4242.x1y2.tmp"):
        (exports / name / "tfjs").mkdir(parents=True)
        (exports / name / "tfjs" / "model.json").write_text("{}")
        (exports / name / "metadata.json").write_text(json.dumps(
            {"classes": ["a", "b"], "input_shape": [32, 32, 3], "artifacts": {"tfjs": {"file": "tfjs/model.json"}}}))
    (tmp_path / "secret.txt").write_text("not for the web")  # beside the exports: must stay private
    httpd = serve.make_server("127.0.0.1", 0, exports, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def get(port, raw_path):
    """GET a path exactly as written (no client-side normalisation of `..` or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_serves_the_page_and_a_model(server):
    status, body = get(server, "/")
    assert status == 200 and b"<html" in body.lower()
    assert get(server, "/models/cnn/tfjs/model.json") == (200, b"{}")


def test_index_lists_finished_exports_only(server):
    status, body = get(server, "/models/index.json")
    assert status == 200 and [m["name"] for m in json.loads(body)] == ["cnn"]
    assert json.loads(body)[0]["side"] == 32 and json.loads(body)[0]["classes"] == ["a", "b"]  # what the page draws and lists


@pytest.mark.parametrize("path", ["/models/", "/models/cnn/", "/models/cnn/tfjs/", "/vendor/tfjs/",
                                  "/vendor/tfjs-backend-wasm/"])
def test_no_directory_listings(server, path):
    status, body = get(server, path)
    assert status == 404 and b"Directory listing" not in body


@pytest.mark.parametrize("path", [
    "/models/../secret.txt",             # resolves to a file that exists beside the exports
    "/models/..%2fsecret.txt",
    "/models/%2e%2e/secret.txt",
    "/models/.cnn.4242.x1y2.tmp/tfjs/model.json",  # an export still being written
])
def test_nothing_outside_a_route_or_hidden_is_served(server, path):
    status, body = get(server, path)
    assert status == 404 and b"not for the web" not in body and body != b"{}"


@pytest.mark.parametrize("path", ["/models/cnn/tfjs/model.json%00.png", "/%00", "/models/cnn%5c..%5csecret.txt"])
def test_odd_paths_get_400_not_a_traceback(server, path):
    status, _ = get(server, path)
    assert status == 400
    assert get(server, "/models/cnn/tfjs/model.json")[0] == 200  # the server is still up


def test_a_corrupt_metadata_json_is_skipped_with_a_warning_and_the_rest_served(tmp_path, capsys):
    exports = tmp_path / "exports"
    for name, meta in (("good", {"classes": ["a", "b"], "input_shape": [32, 32, 3], "artifacts": {"tfjs": {"file": "tfjs/model.json"}}}),
                       ("broken", None), ("old", {"artifacts": {"tfjs": {"file": "tfjs/model.json"}}})):
        (exports / name / "tfjs").mkdir(parents=True)
        (exports / name / "tfjs" / "model.json").write_text("{}")
        (exports / name / "metadata.json").write_text(json.dumps(meta) if meta else '{"classes": [')
    assert [m["name"] for m in serve.model_index(exports)] == ["good"]
    err = capsys.readouterr().err
    assert "skipping" in err and f"{exports / 'broken'}" in err and f"{exports / 'old'}" in err
    httpd = serve.make_server("127.0.0.1", 0, exports, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = get(httpd.server_address[1], "/models/index.json")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status == 200 and [m["name"] for m in json.loads(body)] == ["good"]


def test_the_index_gives_each_models_test_and_corrupted_accuracy_the_most_accurate_first(tmp_path):
    exports, metrics = tmp_path / "models" / "export", tmp_path / "reports" / "metrics" / "export"
    metrics.mkdir(parents=True)
    for name, accuracy in (("plain", 0.936), ("robust", 0.934), ("unmeasured", 0.5)):
        (exports / name / "tfjs").mkdir(parents=True)
        (exports / name / "tfjs" / "model.json").write_text("{}")
        (exports / name / "metadata.json").write_text(json.dumps(
            {"classes": ["a", "b"], "input_shape": [32, 32, 3], "artifacts": {"tfjs": {"file": "tfjs/model.json"}}}))
        (metrics / f"{name}.json").write_text(json.dumps({"artifacts": {"tfjs": {"accuracy": accuracy}}}))
    (metrics.parent / "robustness").mkdir()
    for name, corrupted in (("plain", 0.75), ("robust", 0.85)):
        (metrics.parent / "robustness" / f"{name}.json").write_text(json.dumps(
            {"data": {"test_images": 1000}, name: {"mean_corruption_accuracy": corrupted}}))
    index = serve.model_index(exports, metrics)
    assert [(m["name"], m["accuracy"], m["corrupted_accuracy"]) for m in index] == [
        ("plain", 0.936, 0.75), ("robust", 0.934, 0.85), ("unmeasured", 0.5, None)]
    assert all(m["corrupted_accuracy"] is None for m in serve.model_index(exports))  # no metrics: none


def test_npm_packages_resolve_as_nodejs_does_from_a_copy_inside_the_repository(tmp_path):
    # A `dvc exp run --temp` copy lives under the repository's .dvc/tmp/exps/ without node_modules.
    package = tmp_path / "node_modules" / "@tensorflow" / "tfjs"
    package.mkdir(parents=True)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "standalone" / "tmp1"
    copy.mkdir(parents=True)
    assert serve.npm_package("@tensorflow/tfjs", copy) == package
    (copy / "node_modules" / "@tensorflow" / "tfjs").mkdir(parents=True)  # its own comes first
    assert serve.npm_package("@tensorflow/tfjs", copy) == copy / "node_modules" / "@tensorflow" / "tfjs"
    # None anywhere: the copy's own path is named, so make_server's error says what to install.
    assert serve.npm_package("left-pad", copy) == copy / "node_modules" / "left-pad"
