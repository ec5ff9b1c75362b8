"""Serve the browser demo: web/, the exported TF.js models and TF.js itself, all from this machine.

Usage: python scripts/tools/serve.py [--host 127.0.0.1] [--port 8000] [--exports models/export]

/ is web/; /vendor/tfjs/ and /vendor/tfjs-backend-wasm/ the npm packages' dist/; /models/NAME/ an
export folder; /models/index.json the exported TF.js models, the most accurate first. Nothing
comes from a CDN. Every response carries cross-origin isolation headers (COOP same-origin, COEP
require-corp), so the WASM backend runs multi-threaded; a server of your own should send them too."""

import argparse
import functools
import http.server
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[2]
TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
         ".json": "application/json", ".bin": "application/octet-stream", ".css": "text/css",
         ".html": "text/html; charset=utf-8"}


def metric(path, *keys):
    """The value at `keys` in the JSON file `path`, or None."""
    try:
        value = json.loads(Path(path).read_text())
        for key in keys:
            value = value[key]
        return value
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_index(exports, metrics_dir=None, warn=None):
    """[{name, label, classes, side, url, quantization, accuracy, corrupted_accuracy}] for every
    export with a TF.js model, the most accurate first; hidden folders are skipped, and so, with a
    warning, is an export whose metadata.json is corrupt."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    found = []
    for meta in sorted(Path(exports).glob("*/metadata.json")):
        if meta.parent.name.startswith("."):
            continue
        name = meta.parent.name
        try:
            info = json.loads(meta.read_text())
            tfjs = info.get("artifacts", {}).get("tfjs")
            if not tfjs or not (meta.parent / tfjs["file"]).is_file():
                continue
            entry = {"name": name, "label": str(info.get("label", name)), "classes": list(info["classes"]),
                     "side": int(info["input_shape"][0]),
                     "url": f"models/{name}/{tfjs['file']}", "quantization": tfjs.get("quantization", "none")}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            warn(f"serve: warning: skipping {meta.parent}: its metadata.json is not an export's "
                 f"({type(err).__name__}: {err}); rerun `dvc repro --force export@{name}`")
            continue
        # TF.js' test accuracy (parity@NAME), its mean corrupted accuracy (robustness@NAME, beside it)
        entry["accuracy"] = metric(Path(metrics_dir) / f"{name}.json", "artifacts", "tfjs", "accuracy") if metrics_dir else None
        entry["corrupted_accuracy"] = metric(Path(metrics_dir).parent / "robustness" / f"{name}.json", name,
                                             "mean_corruption_accuracy") if metrics_dir else None
        found.append(entry)
    return sorted(found, key=lambda m: -(m["accuracy"] or 0))


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, routes, exports, metrics, **kwargs):
        self.routes = routes
        self.exports = exports
        self.metrics = metrics
        super().__init__(*args, directory=str(routes["/"]), **kwargs)

    def send_head(self):
        """Refuse odd paths (NUL, backslash, `..`, hidden names) and folders without index.html."""
        path = unquote(urlsplit(self.path).path)
        if "\0" in path or "\\" in path or not path.startswith("/"):
            self.send_error(400, "Bad request path")
            return None
        parts = path.split("/")
        if any(part == ".." or part.startswith(".") for part in parts):
            self.send_error(404, "Not found")
            return None
        target = Path(self.translate_path(self.path))
        if target.is_dir() and not (target / "index.html").is_file():
            self.send_error(404, "Not found")
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(404, "Not found")
        return None

    def do_GET(self):
        if urlsplit(self.path).path == "/models/index.json":
            body = json.dumps(model_index(self.exports, self.metrics)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def translate_path(self, path):
        path = unquote(urlsplit(path).path)
        for prefix in sorted(self.routes, key=len, reverse=True):
            if path.startswith(prefix):
                root = Path(self.routes[prefix]).resolve()
                target = (root / path[len(prefix):].lstrip("/")).resolve()
                # Anything outside the route's folder (../ tricks, symlinks out) is not served.
                return str(target) if target == root or root in target.parents else str(root / ".outside-of-route")
        return str(Path(self.routes["/"]) / ".outside-of-route")

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        # Cross-origin isolation: the page may then use SharedArrayBuffer, which TF.js's
        # multi-threaded WASM backend needs (without it WASM runs on one thread). Everything
        # the page loads is same-origin, so nothing else is affected.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


def npm_package(name, start=REPO):
    """The npm package's folder as Node.js resolves it from `start` (a `dvc exp run --temp` copy
    uses the repository's node_modules)."""
    for folder in (start, *start.parents):
        if (folder / "node_modules" / name).is_dir():
            return folder / "node_modules" / name
    return start / "node_modules" / name


def make_server(host, port, exports, quiet=False, metrics=None):
    exports = Path(exports).resolve()
    routes = {
        "/": REPO / "web",
        "/vendor/tfjs/": npm_package("@tensorflow/tfjs") / "dist",
        "/vendor/tfjs-backend-wasm/": npm_package("@tensorflow/tfjs-backend-wasm") / "dist",
        "/models/": exports,
    }
    for prefix, folder in routes.items():
        if not folder.is_dir():
            hint = "run `make setup` (npm packages)" if "node_modules" in str(folder) else (
                "run `make export`" if folder == exports else "")
            raise FileNotFoundError(f"{folder} not found (served at {prefix}); {hint}".rstrip("; "))
    server = http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, routes=routes, exports=exports,
                                                                                 metrics=metrics))
    server.quiet = quiet
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--exports", type=Path, default=Path("models/export"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics/export"),
                        help="parity metrics: the page offers the most accurate model first")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args()
    server = make_server(args.host, args.port, args.exports, args.quiet, args.metrics)
    models = model_index(args.exports, args.metrics)
    if not models:
        print(f"serve: warning: no TF.js model under {args.exports}; run `make export` first", file=sys.stderr)
    host, port = server.server_address[:2]
    print(f"serving the demo at http://{host}:{port}/ ({', '.join(m['name'] for m in models) or 'no models'}); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, OSError) as err:
        sys.exit(f"serve: error: {err}")
